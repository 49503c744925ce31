"""Session-wide fixtures. The private servers are registered here once, so that every
test module shares one server per session instead of starting its own."""

pytest_plugins = [
    "tests.servers.redis",
    "tests.servers.sqs",
    "tests.servers.pubsub",
    "tests.servers.kafka",
]
