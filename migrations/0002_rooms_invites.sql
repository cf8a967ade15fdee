-- Rooms, their members, every epoch's sealed room keys, and invites. Values arrive
-- validated by lib/store/validate.ts; the CHECKs are a second line against bugs and
-- hand edits. Foreign keys carry the lifecycle: deleting a room removes its members and
-- keys; deleting a user removes its memberships and keys, and is refused while it owns
-- a room (the store says so first, with a readable error).

CREATE TABLE rooms (
  id             TEXT    NOT NULL PRIMARY KEY
                 CHECK (length(id) BETWEEN 1 AND 64),
  subject        TEXT    NOT NULL UNIQUE
                 CHECK (length(subject) BETWEEN 1 AND 128
                        AND instr(subject, '*') = 0 AND instr(subject, '>') = 0
                        AND instr(subject, ' ') = 0 AND substr(subject, 1, 1) NOT IN ('$', '_', '.')),
  owner_sign_pub TEXT    NOT NULL REFERENCES users (sign_pub) ON DELETE RESTRICT,
  encrypt        INTEGER NOT NULL CHECK (encrypt IN (0, 1)),
  persist        INTEGER NOT NULL CHECK (persist IN (0, 1)),
  sign_msgs      INTEGER NOT NULL CHECK (sign_msgs IN (0, 1)),
  epoch          INTEGER NOT NULL CHECK (epoch >= 1 AND (encrypt = 1 OR epoch = 1)),
  created_at     INTEGER NOT NULL
) STRICT;

CREATE INDEX rooms_by_owner ON rooms (owner_sign_pub);

CREATE TABLE room_members (
  room_id  TEXT    NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
  sign_pub TEXT    NOT NULL REFERENCES users (sign_pub) ON DELETE CASCADE,
  role     TEXT    NOT NULL CHECK (role IN ('owner', 'member')),
  added_at INTEGER NOT NULL,
  PRIMARY KEY (room_id, sign_pub)
) STRICT;

-- Discovery (the rooms of one endpoint) and one owner per room.
CREATE INDEX room_members_by_member ON room_members (sign_pub);
CREATE UNIQUE INDEX room_members_one_owner ON room_members (room_id) WHERE role = 'owner';

-- Not tied to room_members: a removed member keeps the keys of the epochs it was in.
CREATE TABLE room_keys (
  room_id  TEXT    NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
  sign_pub TEXT    NOT NULL REFERENCES users (sign_pub) ON DELETE CASCADE,
  epoch    INTEGER NOT NULL CHECK (epoch >= 1),
  sealed   TEXT    NOT NULL CHECK (length(sealed) BETWEEN 1 AND 4096),
  PRIMARY KEY (room_id, sign_pub, epoch)
) STRICT;

CREATE INDEX room_keys_by_epoch ON room_keys (room_id, epoch);
CREATE INDEX room_keys_by_member ON room_keys (sign_pub);

-- Only sha256(token) is kept, so a copy of this file cannot register anyone.
CREATE TABLE invites (
  token_hash TEXT    NOT NULL PRIMARY KEY
             CHECK (length(token_hash) = 64 AND token_hash = lower(token_hash)),
  id         TEXT    NOT NULL UNIQUE CHECK (id = substr(token_hash, 1, 12)),
  handle     TEXT    NOT NULL CHECK (length(handle) BETWEEN 1 AND 64 AND handle = lower(handle)),
  role       TEXT    NOT NULL CHECK (role IN ('admin', 'member')),
  created_by TEXT    NOT NULL CHECK (length(created_by) BETWEEN 1 AND 64),
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  status     TEXT    NOT NULL CHECK (status IN ('open', 'spent', 'cancelled')),
  spent_by   TEXT    CHECK (spent_by IS NULL OR (length(spent_by) = 64 AND spent_by = lower(spent_by))),
  spent_at   INTEGER,
  CHECK ((status = 'spent') = (spent_by IS NOT NULL)),
  CHECK ((spent_by IS NULL) = (spent_at IS NULL))
) STRICT;

CREATE INDEX invites_by_handle ON invites (handle, status);
CREATE INDEX invites_by_created ON invites (created_at, id);
