// @ts-check
/**
 * The console's tables and panels, from the control plane's objects (docs/protocol.md
 * §6.1). Each function renders; what a button does is the caller's (app.js).
 */
import { byId, el, fillTable, keyText, when } from "./dom.js";

/**
 * @typedef {{ signPub: string, handle: string, role: string, status: string, createdAt: number, kexPub: string | null }} User
 * @typedef {{ id: string, handle: string, role: string, status: string, createdAt: number, expiresAt: number }} Invite
 * @typedef {{ id: string, ownerSignPub: string, encrypt: boolean, persist: boolean, signMsgs: boolean, epoch: number, createdAt: number }} Room
 * @typedef {{ roomId: string, signPub: string, role: string, addedAt: number }} Member
 * @typedef {(action: string, id: string) => void} OnAction
 */

/** @param {string} action @param {string} label @param {OnAction} on @param {string} id */
function button(action, label, on, id) {
  return el("button", { type: "button", "data-action": action, text: label, onclick: () => on(action, id) });
}

/** @param {User[]} users @param {string} me @param {OnAction} on */
export function renderUsers(users, me, on) {
  const rows = users.map((u) =>
    el(
      "tr",
      { "data-sign-pub": u.signPub, "data-status": u.status },
      el("td", { text: u.handle + (u.signPub === me ? " (you)" : "") }),
      el("td", { text: u.role }),
      el("td", { text: u.status }),
      el("td", {}, keyText(u.signPub)),
      el("td", { text: when(u.createdAt) }),
      // Not on your own row: revoking or deleting yourself would lock you out mid-task.
      el(
        "td",
        {},
        ...(u.signPub !== me && u.status === "active" ? [button("revoke", "Revoke", on, u.signPub)] : []),
        ...(u.signPub !== me ? [button("delete", "Delete", on, u.signPub)] : []),
      ),
    ),
  );
  fillTable("users-table", rows, "no users");
}

/** What an invitee sees: an open invite past its expiry is expired. @param {Invite} i */
function inviteStatus(i) {
  return i.status === "open" && Date.now() >= i.expiresAt ? "expired" : i.status;
}

/** @param {Invite[]} invites @param {OnAction} on */
export function renderInvites(invites, on) {
  const rows = invites.map((i) => {
    const status = inviteStatus(i);
    return el(
      "tr",
      { "data-invite-id": i.id, "data-status": status },
      el("td", {}, el("code", { text: i.id })),
      el("td", { text: i.handle }),
      el("td", { text: i.role }),
      el("td", { text: status }),
      el("td", { text: when(i.expiresAt) }),
      el("td", {}, ...(status === "open" ? [button("cancel", "Cancel", on, i.id)] : [])),
    );
  });
  fillTable("invites-table", rows, "no invites");
}

/** @param {Room[]} rooms @param {Map<string, string>} handles signPub → handle @param {OnAction} on */
export function renderRooms(rooms, handles, on) {
  const rows = rooms.map((r) =>
    el(
      "tr",
      { "data-room-id": r.id },
      el("td", {}, el("code", { text: r.id })),
      el("td", { text: handles.get(r.ownerSignPub) ?? r.ownerSignPub.slice(0, 12) }),
      el("td", { text: r.encrypt ? `encrypted, epoch ${r.epoch}` : "cleartext" }),
      el("td", { text: [r.persist ? "history" : "", r.signMsgs ? "signed" : ""].filter(Boolean).join(", ") || "—" }),
      el("td", { text: when(r.createdAt) }),
      el("td", {}, button("members", "Members", on, r.id), button("delete", "Delete", on, r.id)),
    ),
  );
  fillTable("rooms-table", rows, "no rooms");
}

/** @param {string} roomId @param {Member[]} members @param {Map<string, string>} handles */
export function renderMembers(roomId, members, handles) {
  const panel = byId("room-members");
  panel.hidden = false;
  panel.dataset.roomId = roomId;
  byId("room-members-title").textContent = `Members of ${roomId}`;
  const rows = members.map((m) =>
    el(
      "tr",
      { "data-sign-pub": m.signPub },
      el("td", { text: handles.get(m.signPub) ?? "?" }),
      el("td", { text: m.role }),
      el("td", {}, keyText(m.signPub)),
      el("td", { text: when(m.addedAt) }),
    ),
  );
  fillTable("members-table", rows, "no members");
}
