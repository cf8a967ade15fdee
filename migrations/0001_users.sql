-- The allowlist: who may use the bus. Keys and handles arrive here already validated
-- and lowercased by lib/store/validate.ts; the CHECKs are a second line, so that a bug
-- or a hand edit cannot store a key that lookups would never find.
CREATE TABLE users (
  sign_pub   TEXT    NOT NULL PRIMARY KEY
             CHECK (length(sign_pub) = 64 AND sign_pub = lower(sign_pub)),
  kex_pub    TEXT
             CHECK (kex_pub IS NULL OR (length(kex_pub) = 64 AND kex_pub = lower(kex_pub))),
  handle     TEXT    NOT NULL UNIQUE
             CHECK (length(handle) BETWEEN 1 AND 64 AND handle = lower(handle)),
  role       TEXT    NOT NULL CHECK (role IN ('admin', 'member')),
  status     TEXT    NOT NULL CHECK (status IN ('active', 'revoked')),
  created_at INTEGER NOT NULL,
  revoked_at INTEGER,
  CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
) STRICT;

CREATE INDEX users_by_created ON users (created_at, handle);
CREATE INDEX users_by_role_status ON users (role, status);
