export default async function globalTeardown() {
  await globalThis.__UNIBUS__?.stop();
}
