"""The gateway's pure logic: parsing OpenAI requests, shaping answers and errors,
stop strings. No sockets, no grpc, no aiohttp: tested without a server."""
