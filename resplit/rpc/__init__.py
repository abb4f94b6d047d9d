"""gRPC transport shared by every service: server runtime, health, metrics
interceptor, side HTTP port, client channels. Transport only: no domain logic."""
