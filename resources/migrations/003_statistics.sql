-- Version 3: what the heads panel and the memory panel show for a session.
CREATE TABLE head_stats (
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    layer      INTEGER NOT NULL,
    head       INTEGER NOT NULL,
    window     INTEGER NOT NULL,                  -- recency window k
    recency    REAL NOT NULL,
    sink       REAL NOT NULL,
    hist       BLOB NOT NULL,                     -- float64 little-endian per distance bin
    PRIMARY KEY (session_id, layer, head)
);

CREATE TABLE memory_samples (
    id                   INTEGER PRIMARY KEY,
    session_id           INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    message_id           INTEGER REFERENCES messages(id) ON DELETE CASCADE,
    tokens               INTEGER NOT NULL,
    kv_bytes             INTEGER NOT NULL,
    recurrent_bytes      INTEGER NOT NULL,
    full_attention_bytes INTEGER NOT NULL,
    created_at           INTEGER NOT NULL
);
CREATE INDEX memory_samples_by_session ON memory_samples(session_id, id);
