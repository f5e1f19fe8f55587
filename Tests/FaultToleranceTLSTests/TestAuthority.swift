import Crypto
import FaultToleranceTLS
import Foundation
import SwiftASN1
import X509

/// A certificate authority made for one test: a fresh P-256 key, certificates issued on the
/// spot, nothing on disk and nothing that expires between runs.
struct TestAuthority {
    let key = P256.Signing.PrivateKey()
    let certificate: Certificate

    init(name: String = "test authority") throws {
        let subject = try DistinguishedName { CommonName(name) }
        certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: Date() - 3600, notValidAfter: Date() + 86_400, issuer: subject, subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true))
            },
            issuerPrivateKey: .init(key))
    }

    /// The authority's certificate, for trust roots.
    var pem: String {
        get throws { try certificate.serializeAsPEM().pemString }
    }

    /// A certificate for `names` (DNS subject alternative names) and its key, both PEM.
    func issue(names: [String]) throws -> (certificate: String, key: String) {
        let leafKey = P256.Signing.PrivateKey()
        let leaf = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(leafKey.publicKey),
            notValidBefore: Date() - 3600, notValidAfter: Date() + 86_400, issuer: certificate.subject,
            subject: try DistinguishedName { CommonName(names.first ?? "nobody") },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                SubjectAlternativeNames(names.map { GeneralName.dnsName($0) })
            },
            issuerPrivateKey: .init(key))
        return (try leaf.serializeAsPEM().pemString, leafKey.pemRepresentation)
    }

    /// Mutual TLS for a node whose certificate names `names`, trusting `trusting` (this
    /// authority by default).
    func tls(for names: [String], trusting: TestAuthority? = nil) throws -> MutualTLS {
        let issued = try issue(names: names)
        return try MutualTLS(
            certificateChainPEM: issued.certificate, privateKeyPEM: issued.key,
            trustRootsPEM: try (trusting ?? self).pem)
    }
}
