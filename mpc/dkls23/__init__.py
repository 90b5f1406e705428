"""DKLs23 threshold ECDSA on secp256k1 (Doerner, Kondi, Lee, shelat, IEEE S&P 2024, ePrint 2023/765)."""
