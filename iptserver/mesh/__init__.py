"""The mesh as render sees it: nodes, their tunnel ends, clients, and the keys they use."""
