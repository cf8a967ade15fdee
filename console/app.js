// @ts-check
/**
 * The admin console: load an identity file in the page, check that it is an admin's,
 * then manage users, invites and rooms and watch the node's health — every request
 * signed here (api.js). The identity never leaves the page; "Forget" drops the key.
 */
import { ApiError, ControlApi, fetchHealth } from "./api.js";
import { byId, swap } from "./dom.js";
import { renderHealth } from "./health.js";
import { IdentityFileError, readIdentityFile } from "./identity.js";
import { renderInvites, renderMembers, renderRooms, renderUsers } from "./views.js";

/** @typedef {import("./views.js").User} User */

/** @type {{ api: ControlApi, signPub: string, handle: string } | undefined} */
let session;
/** signPub → handle, from the last user list. */
let handles = new Map();

/** What went wrong loading an identity, for the admin. @param {unknown} err */
function loginErrorText(err) {
  if (err instanceof IdentityFileError) return `${err.message}. Pick the identity file unibus created for you.`;
  if (err instanceof ApiError && err.notAuthorized) {
    return "This identity is not allowed on this bus (unknown, revoked or deleted). Ask an admin, or load another identity.";
  }
  if (err instanceof ApiError && err.status === 403) {
    return "This identity is not an admin of this bus. The console needs an admin's identity; members use the client.";
  }
  if (err instanceof ApiError) return `The control plane refused: ${err.message} (${err.code}).`;
  return `Could not load the identity: ${err instanceof Error ? err.message : String(err)}`;
}

/** @param {string} text */
function showLoginError(text) {
  const p = byId("login-error");
  p.textContent = text;
  p.hidden = false;
}

/** The file input changed: read it here, check it, and start a session if it is an admin's. @param {Event} ev */
async function onIdentityChosen(ev) {
  const input = /** @type {HTMLInputElement} */ (ev.target);
  const file = input.files?.[0];
  input.value = ""; // the same file can be picked again after a fix, and the page keeps no File
  if (!file) return;
  byId("login-error").hidden = true;
  try {
    const identity = await readIdentityFile(await file.text());
    const api = new ControlApi(identity);
    // Admin-only: a member gets 403 here, an unknown or revoked key 401.
    const users = /** @type {User[]} */ (await api.request("GET", "/v1/users"));
    const me = users.find((u) => u.signPub === identity.signPub);
    session = { api, signPub: identity.signPub, handle: me?.handle ?? "?" };
    startSession();
  } catch (err) {
    showLoginError(loginErrorText(err));
  }
}

function startSession() {
  if (!session) return;
  byId("who").textContent = `Signed in as ${session.handle} (${session.signPub.slice(0, 12)}…)`;
  swap(byId("who"));
  swap(byId("forget"));
  swap(byId("app"), byId("login"));
  byId("banner").hidden = true;
  void act(refreshAll);
}

/** Drops the key and returns to the identity picker, saying why. @param {string} [why] */
function endSession(why) {
  session = undefined;
  handles = new Map();
  swap(byId("login"), byId("app"));
  byId("who").hidden = true;
  byId("forget").hidden = true;
  if (why) showLoginError(why);
}

/** Actions still running: while any is, the page says `data-busy` (for tests and scripts, as `data-ready`). */
let running = 0;

/** Runs one action; a refusal is shown, and a key no longer allowed ends the session. @param {() => Promise<void>} fn */
async function act(fn) {
  running++;
  document.documentElement.dataset.busy = "true";
  try {
    await fn();
  } catch (err) {
    if (err instanceof ApiError && err.notAuthorized) {
      endSession("Your identity is no longer allowed on this bus (revoked or deleted); the console stopped.");
      return;
    }
    const banner = byId("banner");
    banner.textContent = err instanceof ApiError ? `Refused: ${err.message} (${err.code})` : String(err);
    banner.hidden = false;
  } finally {
    if (--running === 0) delete document.documentElement.dataset.busy;
  }
}

/** @param {string} text */
function notify(text) {
  byId("banner").hidden = true;
  byId("notice").textContent = text;
}

function api() {
  if (!session) throw new Error("no identity is loaded");
  return session.api;
}

async function refreshAll() {
  await loadUsers(); // first: the other lists show handles
  await Promise.all([loadInvites(), loadRooms(), loadHealth()]);
}

async function loadUsers() {
  const users = /** @type {User[]} */ (await api().request("GET", "/v1/users"));
  handles = new Map(users.map((u) => [u.signPub, u.handle]));
  renderUsers(users, session?.signPub ?? "", (action, signPub) => void act(() => userAction(action, signPub)));
}

async function loadInvites() {
  const invites = /** @type {import("./views.js").Invite[]} */ (await api().request("GET", "/v1/invites"));
  renderInvites(invites, (_action, id) => void act(() => cancelInvite(id)));
}

async function loadRooms() {
  const rooms = /** @type {import("./views.js").Room[]} */ (await api().request("GET", "/v1/rooms"));
  renderRooms(rooms, handles, (action, id) => void act(() => roomAction(action, id)));
  const shown = byId("room-members");
  if (!rooms.some((r) => r.id === shown.dataset.roomId)) shown.hidden = true;
}

async function loadHealth() {
  const [healthz, report] = await Promise.all([fetchHealth(), api().request("GET", "/v1/status")]);
  renderHealth(healthz, /** @type {import("./health.js").NodeReport} */ (report));
}

/** @param {string} action @param {string} signPub */
async function userAction(action, signPub) {
  const name = handles.get(signPub) ?? signPub;
  if (action === "revoke") {
    if (!confirm(`Revoke ${name}? Their connections are cut at once.`)) return;
    await api().request("POST", `/v1/users/${signPub}/revoke`);
    notify(`Revoked ${name}.`);
  } else {
    const withRooms = /** @type {HTMLInputElement} */ (byId("delete-rooms")).checked;
    if (!confirm(`Delete ${name}${withRooms ? " and the rooms they own" : ""}?`)) return;
    await api().request("DELETE", `/v1/users/${signPub}${withRooms ? "?rooms=delete" : ""}`);
    notify(`Deleted ${name}.`);
  }
  await refreshAll();
}

/** @param {string} id */
async function cancelInvite(id) {
  await api().request("DELETE", `/v1/invites/${id}`);
  notify(`Cancelled invite ${id}.`);
  await loadInvites();
}

/** @param {string} action @param {string} roomId */
async function roomAction(action, roomId) {
  if (action === "members") {
    renderMembers(roomId, await api().request("GET", `/v1/rooms/${roomId}/members`), handles);
    return;
  }
  if (!confirm(`Delete room ${roomId} with its history, keys and files?`)) return;
  await api().request("DELETE", `/v1/rooms/${roomId}`);
  notify(`Deleted room ${roomId}.`);
  await loadRooms();
}

/** @param {HTMLFormElement} form */
function fieldsOf(form) {
  /** @type {Record<string, string>} */
  const out = {};
  for (const [name, value] of new FormData(form))
    if (typeof value === "string" && value.trim()) out[name] = value.trim();
  return out;
}

/** @param {SubmitEvent} ev */
async function onAddUser(ev) {
  ev.preventDefault();
  const form = /** @type {HTMLFormElement} */ (ev.target);
  const f = fieldsOf(form);
  const user = /** @type {User} */ (
    await api().request("POST", "/v1/users", {
      signPub: (f.signPub ?? "").toLowerCase(),
      handle: f.handle ?? "",
      role: f.role ?? "member",
      ...(f.kexPub ? { kexPub: f.kexPub.toLowerCase() } : {}),
    })
  );
  form.reset();
  notify(`Added ${user.handle} (${user.role}).`);
  await loadUsers();
}

/** @param {SubmitEvent} ev */
async function onCreateInvite(ev) {
  ev.preventDefault();
  const form = /** @type {HTMLFormElement} */ (ev.target);
  const f = fieldsOf(form);
  const created = /** @type {{ token: string, invite: import("./views.js").Invite, caFingerprint?: string }} */ (
    await api().request("POST", "/v1/invites", { handle: f.handle ?? "", role: f.role ?? "member", ttl: f.ttl ?? "7d" })
  );
  form.reset();
  showInviteLine(created.token, created.invite, created.caFingerprint);
  await loadInvites();
}

/**
 * The command the invitee runs, as `unibus invite create` prints it: the fingerprint
 * pins the CA, so a ca.pem swapped on its way to the invitee is refused.
 * @param {string} token @param {import("./views.js").Invite} invite @param {string} [caFingerprint]
 */
function showInviteLine(token, invite, caFingerprint) {
  const pin = caFingerprint ? ` --ca-fingerprint ${caFingerprint}` : "";
  const line = `npx unibus register ${token} --identity me.json --control-url ${location.origin} --ca ca.pem${pin}`;
  /** @type {HTMLInputElement} */ (byId("invite-line")).value = line;
  byId("invite-for").textContent =
    `Invite ${invite.id} for ${invite.handle} (${invite.role}), valid until ${new Date(invite.expiresAt).toISOString()}.`;
  byId("invite-created").hidden = false;
}

async function copyInviteLine() {
  const input = /** @type {HTMLInputElement} */ (byId("invite-line"));
  input.select();
  await navigator.clipboard.writeText(input.value).then(
    () => notify("Copied the invite command."),
    () => notify("Select the command and copy it (the browser refused clipboard access)."),
  );
}

function wire() {
  byId("identity-file").addEventListener("change", (ev) => void onIdentityChosen(ev));
  byId("forget").addEventListener("click", () => endSession());
  byId("health-refresh").addEventListener("click", () => void act(loadHealth));
  byId("refresh").addEventListener("click", () => void act(refreshAll));
  byId("user-add").addEventListener("submit", (ev) => void act(() => onAddUser(/** @type {SubmitEvent} */ (ev))));
  byId("invite-create").addEventListener(
    "submit",
    (ev) => void act(() => onCreateInvite(/** @type {SubmitEvent} */ (ev))),
  );
  byId("invite-copy").addEventListener("click", () => void copyInviteLine());
  document.documentElement.dataset.ready = "true"; // for tests and scripts: the handlers are in place
}

wire();
