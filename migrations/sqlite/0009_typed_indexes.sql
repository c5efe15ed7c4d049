-- Typed indexes and range queries. A query's conditions other than the one driving the scan
-- are checked per document by looking up the document's own entry of an index (its key,
-- then the index name, then the value): this replaces the index by key alone, which could
-- find the key but then had to read all its entries.
DROP INDEX document_index_by_key;
CREATE INDEX document_index_by_key ON document_index (tenant_id, plugin_id, collection, key, field, value);
