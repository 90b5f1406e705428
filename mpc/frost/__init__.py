"""FROST (RFC 9591): ciphersuites Ed25519/SHA-512, secp256k1/SHA-256 and the BIP-340 (secp256k1-tr) variant."""
