import { expect, test } from "@jest/globals";
import { testMember, testRoom } from "unibus/testing";

const info = JSON.parse(process.env.UNIBUS_TEST_INFO);

test("alice and bob share an encrypted room", async () => {
  const { members, rooms, close } = await testRoom(info, ["alice", "bob"], { encrypt: true });
  try {
    const inbox = rooms.bob.subscribe()[Symbol.asyncIterator]();
    await members.bob.nc.flush(); // bob's subscription has reached the server before alice publishes
    await rooms.alice.publish("hello from jest");
    const { value } = await inbox.next();
    expect(new TextDecoder().decode(value.data)).toBe("hello from jest");
  } finally {
    await close();
  }
});

test("a member of no room sees no rooms", async () => {
  const carol = await testMember(info);
  try {
    expect(await carol.listMyRooms()).toEqual([]);
  } finally {
    await carol.close();
  }
});

(process.env.UNIBUS_EXAMPLE_FAIL === "1" ? test : test.skip)("a failing test (the run must still stop the bus)", () => {
  expect("this run").toBe("failing on purpose");
});
