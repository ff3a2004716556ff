-- Version 1: documents, sessions and their messages.
CREATE TABLE documents (
    id             INTEGER PRIMARY KEY,
    sha256         TEXT NOT NULL UNIQUE,          -- of text; imports dedupe on it
    title          TEXT NOT NULL,
    path           TEXT NOT NULL,                 -- where it was last imported from
    format         TEXT NOT NULL,                 -- txt | md | pdf
    text           TEXT NOT NULL,                 -- UTF-8, \n line endings
    n_bytes        INTEGER NOT NULL,
    n_tokens       INTEGER NOT NULL DEFAULT -1,   -- for the tokenizer of n_tokens_model, -1 unknown
    n_tokens_model TEXT NOT NULL DEFAULT '',
    added_at       INTEGER NOT NULL               -- ms since the epoch
);

CREATE TABLE sessions (
    id                INTEGER PRIMARY KEY,
    name              TEXT NOT NULL,
    document_id       INTEGER NOT NULL REFERENCES documents(id),
    model_path        TEXT NOT NULL,
    model_fingerprint TEXT NOT NULL,              -- 16 hex digits (recur::model::fingerprint)
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX sessions_by_document ON sessions(document_id, updated_at);

CREATE TABLE messages (
    id             INTEGER PRIMARY KEY,
    session_id     INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role           TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content        TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    prompt_tokens  INTEGER NOT NULL DEFAULT 0,
    prefill_tokens INTEGER NOT NULL DEFAULT 0,
    prefill_tok_s  REAL NOT NULL DEFAULT 0,
    decode_tokens  INTEGER NOT NULL DEFAULT 0,
    decode_tok_s   REAL NOT NULL DEFAULT 0,
    stop_reason    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX messages_by_session ON messages(session_id, id);
