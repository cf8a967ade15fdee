import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { startTestBus, testMember, testRoom } from "unibus/testing";

// One bus for this file. (Node 24's --test-global-setup can share one across files.)
let testBus;
before(async () => {
  testBus = await startTestBus();
});
after(() => testBus?.stop());

test("alice and bob share an encrypted room", async () => {
  const { members, rooms, close } = await testRoom(testBus.info, ["alice", "bob"], { encrypt: true });
  try {
    const inbox = rooms.bob.subscribe()[Symbol.asyncIterator]();
    await members.bob.nc.flush(); // bob's subscription has reached the server before alice publishes
    await rooms.alice.publish("hello from node:test");
    const { value } = await inbox.next();
    assert.equal(new TextDecoder().decode(value.data), "hello from node:test");
  } finally {
    await close();
  }
});

test("a member of no room sees no rooms", async () => {
  const carol = await testMember(testBus.info);
  try {
    assert.deepEqual(await carol.listMyRooms(), []);
  } finally {
    await carol.close();
  }
});

test("a failing test (the run must still stop the bus)", { skip: process.env.UNIBUS_EXAMPLE_FAIL !== "1" }, () => {
  assert.equal("this run", "failing on purpose");
});
