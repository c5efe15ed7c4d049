-- Named counters per tenant and plugin (`keel:platform/sequences`). Taken in a transaction
-- of their own, so concurrent calls never conflict over them. Never edit this file after it
-- lands.
CREATE TABLE sequences (
    tenant_id  TEXT NOT NULL,
    plugin_id  TEXT NOT NULL,
    name       TEXT NOT NULL,
    value      INTEGER NOT NULL CHECK (value > 0),   -- the last value handed out
    PRIMARY KEY (tenant_id, plugin_id, name)
) WITHOUT ROWID;
