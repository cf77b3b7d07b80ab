package connector

// ParseAgentsForTest exposes the /proc/net/connector parser to the fuzz
// target.
var ParseAgentsForTest = parseAgents
