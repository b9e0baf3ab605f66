"""The builder service: an agent whose tool calls write an app, streamed as ordered flow items."""
