-- Instance reuse, chosen per deployed module version (`recur module deploy
-- --reuse-instance`). When true, a worker that runs consecutive tasks of this version for
-- its tenant may keep the instance and call it again instead of instantiating afresh:
-- faster, but statics and heap then carry over from one of the tenant's tasks to the
-- next. Never across tenants or versions; see the README. Off by default: every task
-- gets a fresh instance.
ALTER TABLE modules ADD COLUMN reuse_instance boolean NOT NULL DEFAULT false;
