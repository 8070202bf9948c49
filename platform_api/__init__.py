"""The product people log into: auth, chats, usage, admin. Serves the built `ui/`."""
