"""Worker logic without transport: identity and capacity now; segments,
sessions and KV caches land with the data-plane issue."""
