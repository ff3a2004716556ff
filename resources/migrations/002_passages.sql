-- Version 2: passages of long documents with a full-text index (FTS5, BM25), and the passages
-- each answer was given from.
CREATE TABLE passages (
    id          INTEGER PRIMARY KEY,
    document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal     INTEGER NOT NULL,                 -- 0-based, document order
    begin_byte  INTEGER NOT NULL,                 -- [begin_byte, end_byte) of documents.text
    end_byte    INTEGER NOT NULL,
    est_tokens  INTEGER NOT NULL,
    text        TEXT NOT NULL,
    UNIQUE (document_id, ordinal)
);

-- External-content FTS5 table over passages.text; the triggers keep it in step.
CREATE VIRTUAL TABLE passage_fts USING fts5(
    text, content='passages', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER passages_ai AFTER INSERT ON passages BEGIN
    INSERT INTO passage_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER passages_ad AFTER DELETE ON passages BEGIN
    INSERT INTO passage_fts(passage_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;

-- Which documents have been split (with which sizes): a document with no passages is
-- told apart from one not yet indexed.
CREATE TABLE passage_sets (
    document_id   INTEGER PRIMARY KEY REFERENCES documents(id) ON DELETE CASCADE,
    target_tokens INTEGER NOT NULL,
    max_tokens    INTEGER NOT NULL,
    n_passages    INTEGER NOT NULL
);

CREATE TABLE message_passages (
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    ordinal    INTEGER NOT NULL,
    begin_byte INTEGER NOT NULL,
    end_byte   INTEGER NOT NULL,
    PRIMARY KEY (message_id, ordinal)
);
