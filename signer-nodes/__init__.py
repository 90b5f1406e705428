"""The signer-node service: protocol sessions, SQLCipher store, envelopes, policy check."""
