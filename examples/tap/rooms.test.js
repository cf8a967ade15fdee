import t from "tap";
import { startTestBus, testMember, testRoom } from "unibus/testing";

// One bus for this file, stopped when the file's tests end (pass or fail).
const testBus = await startTestBus();
t.teardown(() => testBus.stop());

t.test("alice and bob share an encrypted room", async (t) => {
  const seeded = await testRoom(testBus.info, ["alice", "bob"], { encrypt: true });
  t.teardown(() => seeded.close());
  const inbox = seeded.rooms.bob.subscribe()[Symbol.asyncIterator]();
  await seeded.members.bob.nc.flush(); // bob's subscription has reached the server before alice publishes
  await seeded.rooms.alice.publish("hello from tap");
  const { value } = await inbox.next();
  t.equal(new TextDecoder().decode(value.data), "hello from tap");
});

t.test("a member of no room sees no rooms", async (t) => {
  const carol = await testMember(testBus.info);
  t.teardown(() => carol.close());
  t.same(await carol.listMyRooms(), []);
});

t.test("a failing test (the run must still stop the bus)", { skip: process.env.UNIBUS_EXAMPLE_FAIL !== "1" }, async (t) => {
  t.equal("this run", "failing on purpose");
});
