"""splice.conformance: a black-box conformance kit for CNI plugins and CNM drivers."""
