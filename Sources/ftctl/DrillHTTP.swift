import Foundation

/// One HTTP/1.0 request to 127.0.0.1:`port`; the status code and the body.
func drillHTTP(port: Int, method: String, path: String, body: [UInt8] = []) throws -> (status: Int, body: [UInt8]) {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { throw CommandFailure("socket: \(String(cString: strerror(errno)))") }
    defer { close(descriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard connected == 0 else { throw CommandFailure("connect to port \(port): \(String(cString: strerror(errno)))") }
    let request = Array("\(method) \(path) HTTP/1.0\r\nContent-Length: \(body.count)\r\n\r\n".utf8) + body
    var sent = 0
    while sent < request.count {
        let count = request[sent...].withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { throw CommandFailure("send: \(String(cString: strerror(errno)))") }
        sent += count
    }
    var response: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { break }
        response += chunk[0..<count]
    }
    // The status line ends in CRLF; a CGI script's own header lines may end in LF alone.
    let crlf = response.firstRange(of: Array("\r\n\r\n".utf8))
    let lf = response.firstRange(of: Array("\n\n".utf8))
    guard let split = [crlf, lf].compactMap({ $0 }).min(by: { $0.lowerBound < $1.lowerBound }),
        let line = String(bytes: response[..<split.lowerBound], encoding: .utf8)?.split(separator: " "),
        line.count >= 2, let status = Int(line[1])
    else { throw CommandFailure("a malformed HTTP response of \(response.count) bytes") }
    return (status, Array(response[split.upperBound...]))
}
