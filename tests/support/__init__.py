"""What the tests share: free ports, a real redis-server, waiting for HTTP, one local HTTP origin."""
