import type { Room, RoomMessage } from "../../lib/client/room.ts";

/**
 * Subscribes to `room` and keeps what arrives; `until(n)` waits (bounded by
 * `waitMs` unless given) for `n` messages and answers how many came.
 * The reasons of dropped frames go to `drops`.
 */
export function collector(room: Room, opts: { drops?: string[]; waitMs?: number } = {}) {
  const got: RoomMessage[] = [];
  const sub = room.subscribe({ callback: (m) => void got.push(m), onDrop: (d) => void opts.drops?.push(d.reason) });
  return {
    got,
    sub,
    texts: () => got.map((m) => new TextDecoder().decode(m.data)),
    async until(n: number, ms = opts.waitMs ?? 5000) {
      const end = Date.now() + ms;
      while (got.length < n && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
      return got.length;
    },
  };
}
