-- Version 4: engine state files (recur::context::save_state), one per session, so reopening a
-- session does not read its document again. The file itself carries the model fingerprint and a
-- checksum; the row lets a session find it and skip one saved for another model.
CREATE TABLE engine_snapshots (
    session_id        INTEGER PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    path              TEXT NOT NULL,
    model_fingerprint TEXT NOT NULL,
    n_past            INTEGER NOT NULL,
    n_ctx             INTEGER NOT NULL,
    created_at        INTEGER NOT NULL
);
