"""Apache Kafka edges: the local single-node broker and topic administration."""
