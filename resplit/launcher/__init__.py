"""The local launcher behind ``resplit up / status / down``: Redis, the five
services and N workers as separate processes on this host."""
