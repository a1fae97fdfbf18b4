-- Least-privilege grants for the VALORA service roles.
--
-- Run as the owner role (the one `valora migrate` uses) after every
-- migration. The roles valora_marketplace and valora_auth must exist; see
-- docs/database-roles.md for creating them. Each service gets CRUD rights
-- on its own tables only, may only INSERT into its audit trail, and gets no
-- right to change the schema.

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO valora_marketplace, valora_auth;

-- Marketplace.
GRANT SELECT, INSERT, UPDATE, DELETE ON marketplace_listings, marketplace_plans, marketplace_outbox,
    marketplace_webhook_endpoints, marketplace_webhook_deliveries, marketplace_webhook_attempts TO valora_marketplace;
GRANT USAGE, SELECT ON SEQUENCE marketplace_outbox_seq_seq TO valora_marketplace;
GRANT SELECT ON marketplace_migrations TO valora_marketplace;
GRANT SELECT, INSERT ON marketplace_audit_events TO valora_marketplace;
GRANT SELECT, UPDATE ON marketplace_audit_head TO valora_marketplace;

-- Auth.
GRANT SELECT, INSERT, UPDATE, DELETE ON auth_users, auth_refresh_tokens, auth_api_keys TO valora_auth;
GRANT SELECT ON auth_migrations TO valora_auth;
GRANT SELECT, INSERT ON auth_audit_events TO valora_auth;
GRANT SELECT, UPDATE ON auth_audit_head TO valora_auth;
