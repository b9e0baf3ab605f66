"""appforge: the backend of a chat-driven app builder (chat, builder and deployer services)."""

__version__ = "0.1.0"
