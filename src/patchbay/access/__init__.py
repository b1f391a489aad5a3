"""Who may reach patchbay's own endpoints: tokens, roles, OAuth (resource server and authorization server)."""
