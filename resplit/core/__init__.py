"""Pure domain logic shared by services and the SDK: no grpc, no redis, no I/O."""
