import { testMember, testRoom } from "unibus/testing";
import { expect, inject, test } from "vitest";

test("alice and bob share an encrypted room", async () => {
  const { members, rooms, close } = await testRoom(inject("unibus"), ["alice", "bob"], { encrypt: true });
  try {
    const inbox = rooms.bob!.subscribe()[Symbol.asyncIterator]();
    await members.bob!.nc.flush(); // bob's subscription has reached the server before alice publishes
    await rooms.alice!.publish("hello from vitest");
    const { value } = await inbox.next();
    expect(new TextDecoder().decode(value?.data)).toBe("hello from vitest");
  } finally {
    await close();
  }
});

test("a member of no room sees no rooms", async () => {
  const carol = await testMember(inject("unibus"));
  try {
    expect(await carol.listMyRooms()).toEqual([]);
  } finally {
    await carol.close();
  }
});

test.runIf(process.env.UNIBUS_EXAMPLE_FAIL === "1")("a failing test (the run must still stop the bus)", () => {
  expect("this run").toBe("failing on purpose");
});
