#!/usr/bin/env python3
"""Strict-parser checks of mailid output with the `cryptography` package.

Usage: check.py CA_CERT.pem CERT_OR_CRL... (files ending .crl.der/.crl.pem are CRLs)

For every certificate: parses (strict DER), checks the signature with the CA
certificate's key, and checks that the SubjectKeyIdentifier equals the strong
key ID (draft-hallambaker-prismproof-key-01, V=2) computed here from the
SubjectPublicKeyInfo. For every CRL: parses and verifies its signature.
Prints one line per file and a closing 'N passed, N failed' line.
"""
import hashlib
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization


def load_cert(path):
    data = open(path, "rb").read()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def load_crl(path):
    data = open(path, "rb").read()
    if b"-----BEGIN" in data:
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def strong_key_id(cert):
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return bytes([2]) + hashlib.sha512(bytes([2]) + spki).digest()[:32]


def main():
    ca = load_cert(sys.argv[1])
    passed = failed = 0
    for path in sys.argv[2:]:
        try:
            if ".crl." in path:
                crl = load_crl(path)
                if not crl.is_signature_valid(ca.public_key()):
                    raise ValueError("CRL signature does not verify with the CA key")
                print(f"ok   {path}: CRL #{crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number}, {len(list(crl))} entries")
            else:
                cert = load_cert(path)
                cert.verify_directly_issued_by(ca)
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
                expected = strong_key_id(cert)
                if ski != expected:
                    raise ValueError(f"SKI {ski.hex()} is not the strong key ID {expected.hex()}")
                print(f"ok   {path}: serial {cert.serial_number:x}, SKI = strong key ID")
            passed += 1
        except Exception as e:  # noqa: BLE001 - report every failure
            print(f"FAIL {path}: {e}")
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
