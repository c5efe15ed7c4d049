-- The change feed of hosts sharing this database: a generation per topic, moved in the
-- same transaction as the change it announces (which also sends NOTIFY keel_changes).
-- Each host compares the generations with those it last saw and reloads what moved.
CREATE TABLE cluster_changes (
    topic       TEXT COLLATE "C" PRIMARY KEY,
    generation  BIGINT NOT NULL
);
