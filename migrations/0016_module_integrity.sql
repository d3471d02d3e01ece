-- A module version's sha256 is the hash of its bytes, and its bytes are within the size
-- `recur module deploy` allows (MAX_COMPONENT_BYTES in registry/deploy.rs), whoever
-- inserts it. Hosts share compiled code between versions of the same sha256, across
-- tenants (registry/mod.rs, and the compile cache on disk): a row whose hash another
-- tenant's module has, but whose bytes differ, would have that tenant's tasks run code
-- the row's tenant chose. A tenant's role inserts its own module rows (migrations/0011),
-- so the database checks both on every insert, as the deploy door always did.
ALTER TABLE modules
    ADD CONSTRAINT modules_sha256_is_the_hash CHECK (sha256 = encode(sha256(component), 'hex')),
    ADD CONSTRAINT modules_component_size CHECK (octet_length(component) BETWEEN 1 AND 67108864);
