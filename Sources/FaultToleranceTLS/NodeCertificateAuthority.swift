#if TLS
    public import Crypto
    import FaultToleranceCore
    public import Foundation
    public import Metrics
    import SwiftASN1
    public import X509

    /// A certificate authority for one deployment's nodes: it issues each node a certificate that
    /// names the node, the credential ``MutualTLS`` expects.
    ///
    /// For tests, development clusters and small deployments that run their own authority; a
    /// deployment with a PKI of its own issues the same shape of certificate there (a DNS subject
    /// alternative name per node name, extended key usage for both TLS server and client).
    ///
    /// ```swift
    /// let authority = try NodeCertificateAuthority(name: "cluster-7")
    /// let a = try authority.issue(for: ["a"])
    /// try a.certificatePEM.write(toFile: "a.pem", atomically: true, encoding: .utf8)
    /// try a.privateKeyPEM.write(toFile: "a.key", atomically: true, encoding: .utf8)   // mode 0600
    /// try authority.certificatePEM.write(toFile: "ca.pem", atomically: true, encoding: .utf8)
    /// ```
    public struct NodeCertificateAuthority: Sendable {
        /// A node's credential: its certificate and private key, PEM.
        public struct Credential: Sendable {
            /// The certificate, PEM.
            public var certificatePEM: String
            /// The private key, PEM (PKCS #8); keep it readable by the node's owner only.
            public var privateKeyPEM: String
        }

        private let key: P256.Signing.PrivateKey
        /// The authority's own certificate (self-signed).
        public let certificate: Certificate

        /// Creates an authority with a fresh P-256 key and a self-signed certificate valid for
        /// `validity` from an hour ago (clocks differ).
        public init(name: String, validity: Duration = .seconds(365 * 86_400)) throws {
            key = P256.Signing.PrivateKey()
            let subject = try DistinguishedName { CommonName(name) }
            certificate = try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
                notValidBefore: Date() - 3600, notValidAfter: Date() + Self.seconds(validity), issuer: subject,
                subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                    Critical(KeyUsage(keyCertSign: true))
                },
                issuerPrivateKey: .init(key))
        }

        /// Loads an authority from its certificate and private key, PEM (as ``certificatePEM`` and
        /// ``privateKeyPEM`` wrote them).
        public init(certificatePEM: String, privateKeyPEM: String) throws {
            key = try P256.Signing.PrivateKey(pemRepresentation: privateKeyPEM)
            certificate = try Certificate(pemEncoded: certificatePEM)
        }

        /// The authority's certificate, PEM: every node's trust roots.
        public var certificatePEM: String {
            get throws { try certificate.serializeAsPEM().pemString }
        }

        /// The authority's private key, PEM; whoever holds it can issue certificates for any node.
        public var privateKeyPEM: String { key.pemRepresentation }

        /// Issues a credential for a node called by each of `names` (DNS subject alternative names;
        /// usually one), with a fresh P-256 key, valid for `validity` from an hour ago.
        public func issue(for names: [String], validity: Duration = .seconds(90 * 86_400)) throws -> Credential {
            let leafKey = P256.Signing.PrivateKey()
            let leaf = try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(leafKey.publicKey),
                notValidBefore: Date() - 3600, notValidAfter: Date() + Self.seconds(validity),
                issuer: certificate.subject,
                subject: try DistinguishedName { CommonName(names.first ?? "no node") },
                signatureAlgorithm: .ecdsaWithSHA256,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.serverAuth, .clientAuth])
                    SubjectAlternativeNames(names.map { GeneralName.dnsName($0) })
                },
                issuerPrivateKey: .init(key))
            return Credential(
                certificatePEM: try leaf.serializeAsPEM().pemString, privateKeyPEM: leafKey.pemRepresentation)
        }

        /// Mutual TLS for a new node called by `names`, trusting this authority.
        public func mutualTLS(for names: [String], metricsFactory: (any MetricsFactory)? = nil) throws -> MutualTLS {
            let credential = try issue(for: names)
            return try MutualTLS(
                certificateChainPEM: credential.certificatePEM, privateKeyPEM: credential.privateKeyPEM,
                trustRootsPEM: certificatePEM, metricsFactory: metricsFactory)
        }

        private static func seconds(_ duration: Duration) -> TimeInterval {
            let (whole, fraction) = duration.components
            return TimeInterval(whole) + TimeInterval(fraction) / 1e18
        }
    }
#endif
