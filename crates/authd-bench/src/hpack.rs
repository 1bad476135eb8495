//! HPACK (RFC 7541), as much as the lean client needs: decoding every
//! header block the server sends (static and dynamic table, Huffman
//! strings), and encoding requests whose fields the server keeps in its
//! table after the first request, so that later requests are all indexes.

use std::{borrow::Cow, collections::VecDeque, sync::LazyLock};

/// The static table (RFC 7541, appendix A); index 1 is the first entry.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

const METHOD_POST: usize = 3;
const SCHEME_HTTP: usize = 6;
const PATH: usize = 4;
const AUTHORITY: usize = 1;
const CONTENT_TYPE: usize = 31;

/// The end-of-string symbol, which must never be decoded.
const EOS: u16 = 256;

/// HPACK's Huffman code (RFC 7541, appendix B) as the symbols of each
/// code length. The code is canonical: codes are handed out in order of
/// length, then symbol, so these lists fix every code.
const HUFFMAN_BY_LENGTH: [(usize, &[u16]); 21] = [
    (5, &[48, 49, 50, 97, 99, 101, 105, 111, 115, 116]),
    (
        6,
        &[
            32, 37, 45, 46, 47, 51, 52, 53, 54, 55, 56, 57, 61, 65, 95, 98, 100, 102, 103, 104,
            108, 109, 110, 112, 114, 117,
        ],
    ),
    (
        7,
        &[
            58, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86,
            87, 89, 106, 107, 113, 118, 119, 120, 121, 122,
        ],
    ),
    (8, &[38, 42, 44, 59, 88, 90]),
    (10, &[33, 34, 40, 41, 63]),
    (11, &[39, 43, 124]),
    (12, &[35, 62]),
    (13, &[0, 36, 64, 91, 93, 126]),
    (14, &[94, 125]),
    (15, &[60, 96, 123]),
    (19, &[92, 195, 208]),
    (20, &[128, 130, 131, 162, 184, 194, 224, 226]),
    (
        21,
        &[
            153, 161, 167, 172, 176, 177, 179, 209, 216, 217, 227, 229, 230,
        ],
    ),
    (
        22,
        &[
            129, 132, 133, 134, 136, 146, 154, 156, 160, 163, 164, 169, 170, 173, 178, 181, 185,
            186, 187, 189, 190, 196, 198, 228, 232, 233,
        ],
    ),
    (
        23,
        &[
            1, 135, 137, 138, 139, 140, 141, 143, 147, 149, 150, 151, 152, 155, 157, 158, 165, 166,
            168, 174, 175, 180, 182, 183, 188, 191, 197, 231, 239,
        ],
    ),
    (
        24,
        &[9, 142, 144, 145, 148, 159, 171, 206, 215, 225, 236, 237],
    ),
    (25, &[199, 207, 234, 235]),
    (
        26,
        &[
            192, 193, 200, 201, 202, 205, 210, 213, 218, 219, 238, 240, 242, 243, 255,
        ],
    ),
    (
        27,
        &[
            203, 204, 211, 212, 214, 221, 222, 223, 241, 244, 245, 246, 247, 248, 250, 251, 252,
            253, 254,
        ],
    ),
    (
        28,
        &[
            2, 3, 4, 5, 6, 7, 8, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 26, 27, 28,
            29, 30, 31, 127, 220, 249,
        ],
    ),
    (30, &[10, 13, 22, EOS]),
];

const LONGEST_CODE: usize = 30;

/// Canonical decoding: for each length, its first code and where its
/// symbols start in code order.
struct Huffman {
    first: [u32; LONGEST_CODE + 1],
    count: [u32; LONGEST_CODE + 1],
    offset: [usize; LONGEST_CODE + 1],
    symbols: Vec<u16>,
}

static HUFFMAN: LazyLock<Huffman> = LazyLock::new(|| {
    let mut huffman = Huffman {
        first: [0; LONGEST_CODE + 1],
        count: [0; LONGEST_CODE + 1],
        offset: [0; LONGEST_CODE + 1],
        symbols: Vec::with_capacity(257),
    };
    for (length, symbols) in HUFFMAN_BY_LENGTH {
        huffman.count[length] = symbols.len() as u32;
        huffman.offset[length] = huffman.symbols.len();
        huffman.symbols.extend_from_slice(symbols);
    }
    let mut code = 0u32;
    for length in 1..=LONGEST_CODE {
        code = (code + huffman.count[length - 1]) << 1;
        huffman.first[length] = code;
    }
    huffman
});

fn huffman_decode(bits: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let huffman = &*HUFFMAN;
    let (mut code, mut length) = (0u32, 0usize);
    for byte in bits {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            length += 1;
            if length > LONGEST_CODE {
                return Err("a Huffman code longer than any".into());
            }
            let rank = code.wrapping_sub(huffman.first[length]);
            if rank < huffman.count[length] {
                let symbol = huffman.symbols[huffman.offset[length] + rank as usize];
                let symbol = u8::try_from(symbol).map_err(|_| "EOS inside a string")?;
                out.push(symbol);
                (code, length) = (0, 0);
            }
        }
    }
    // What is left must be padding: fewer than 8 bits, all ones (a prefix
    // of EOS).
    if length < 8 && code == (1 << length) - 1 {
        Ok(())
    } else {
        Err("bad Huffman padding".into())
    }
}

/// Reads an integer with an `n`-bit prefix (RFC 7541, 5.1) at `at`.
fn read_int(block: &[u8], at: &mut usize, n: u32) -> Result<usize, String> {
    let short = "a header block cut short";
    let mask = (1usize << n) - 1;
    let mut value = usize::from(*block.get(*at).ok_or(short)?) & mask;
    *at += 1;
    if value < mask {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let byte = *block.get(*at).ok_or(short)?;
        *at += 1;
        value += usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 28 {
            return Err("an integer too large".into());
        }
    }
}

fn write_int(out: &mut Vec<u8>, first_bits: u8, n: u32, value: usize) {
    let mask = (1usize << n) - 1;
    if value < mask {
        out.push(first_bits | value as u8);
        return;
    }
    out.push(first_bits | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

fn read_string<'b>(block: &'b [u8], at: &mut usize) -> Result<Cow<'b, [u8]>, String> {
    let huffman = block.get(*at).is_some_and(|b| b & 0x80 != 0);
    let length = read_int(block, at, 7)?;
    let raw = block
        .get(*at..*at + length)
        .ok_or("a string past the header block")?;
    *at += length;
    if huffman {
        let mut decoded = Vec::with_capacity(length * 8 / 5);
        huffman_decode(raw, &mut decoded)?;
        Ok(Cow::Owned(decoded))
    } else {
        Ok(Cow::Borrowed(raw))
    }
}

fn write_string(out: &mut Vec<u8>, text: &str) {
    write_int(out, 0, 7, text.len());
    out.extend_from_slice(text.as_bytes());
}

/// An entry's size as the table counts it (RFC 7541, 4.1).
fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

/// Decodes the server's header blocks, keeping its dynamic table.
pub(crate) struct Decoder {
    /// Newest first.
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
    /// The table size this client allows (its SETTINGS_HEADER_TABLE_SIZE).
    limit: usize,
}

impl Decoder {
    /// A decoder for a client that left SETTINGS_HEADER_TABLE_SIZE at
    /// its default.
    pub(crate) fn new() -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max_size: 4096,
            limit: 4096,
        }
    }

    /// Decodes one whole header block, handing each field to `field`.
    pub(crate) fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), String> {
        let mut at = 0;
        while let Some(&first) = block.get(at) {
            if first & 0x80 != 0 {
                let index = read_int(block, &mut at, 7)?;
                let (name, value) = self.entry(index)?;
                field(name, value);
            } else if first & 0xe0 == 0x20 {
                let size = read_int(block, &mut at, 5)?;
                if size > self.limit {
                    return Err(format!(
                        "a table size update to {size}, over {}",
                        self.limit
                    ));
                }
                self.max_size = size;
                self.evict(0);
            } else {
                // A literal: with incremental indexing (01), without
                // indexing (0000) or never indexed (0001).
                let indexing = first & 0xc0 == 0x40;
                let index = read_int(block, &mut at, if indexing { 6 } else { 4 })?;
                let name: Cow<'_, [u8]> = if index == 0 {
                    read_string(block, &mut at)?
                } else {
                    Cow::Owned(self.entry(index)?.0.to_vec())
                };
                let value = read_string(block, &mut at)?;
                field(&name, &value);
                if indexing {
                    self.insert(name.into_owned(), value.into_owned());
                }
            }
        }
        Ok(())
    }

    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), String> {
        if let Some((name, value)) = index.checked_sub(1).and_then(|i| STATIC.get(i)) {
            return Ok((name.as_bytes(), value.as_bytes()));
        }
        index
            .checked_sub(STATIC.len() + 1)
            .and_then(|i| self.table.get(i))
            .map(|(name, value)| (name.as_slice(), value.as_slice()))
            .ok_or_else(|| format!("no header table entry {index}"))
    }

    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = entry_size(&name, &value);
        self.evict(size);
        if size <= self.max_size {
            self.size += size;
            self.table.push_front((name, value));
        }
    }

    /// Evicts the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some((name, value)) = self.table.pop_back() else {
                break;
            };
            self.size -= entry_size(&name, &value);
        }
    }
}

/// Encodes gRPC requests (POST over plain HTTP/2). The first request of a
/// connection adds its fields to the server's table; every later one is
/// made of indexes only, and its block is kept and reused as it is until
/// a new entry shifts the indexes.
pub(crate) struct Encoder {
    authority: String,
    /// Newest last; never evicted: they stay far below any table size the
    /// server allows, or are not added.
    entries: Vec<(&'static str, String)>,
    used: usize,
    /// The table size the server allows (its SETTINGS_HEADER_TABLE_SIZE).
    room: usize,
    /// Header blocks made of indexes only, by path.
    settled: Vec<(&'static str, Vec<u8>)>,
}

impl Encoder {
    pub(crate) fn new(authority: String) -> Self {
        Self {
            authority,
            entries: Vec::new(),
            used: 0,
            room: 4096,
            settled: Vec::new(),
        }
    }

    /// The server's SETTINGS_HEADER_TABLE_SIZE; `Err` if it no longer
    /// holds the fields added to it.
    pub(crate) fn set_room(&mut self, room: usize) -> Result<(), String> {
        if room < self.used {
            return Err(format!(
                "the server shrank its header table to {room} bytes"
            ));
        }
        self.room = room;
        Ok(())
    }

    /// Appends the header block of a gRPC call of `path` to `out`.
    pub(crate) fn request(&mut self, path: &'static str, out: &mut Vec<u8>) {
        if let Some((_, block)) = self.settled.iter().find(|(p, _)| *p == path) {
            out.extend_from_slice(block);
            return;
        }
        let mut block = Vec::new();
        write_int(&mut block, 0x80, 7, METHOD_POST);
        write_int(&mut block, 0x80, 7, SCHEME_HTTP);
        let authority = self.authority.clone();
        let mut indexes_only = self.field(PATH, ":path", path, &mut block);
        indexes_only &= self.field(AUTHORITY, ":authority", &authority, &mut block);
        indexes_only &= self.field(CONTENT_TYPE, "content-type", "application/grpc", &mut block);
        indexes_only &= self.field(0, "te", "trailers", &mut block);
        out.extend_from_slice(&block);
        if indexes_only {
            self.settled.push((path, block));
        }
    }

    /// Appends one field: an index if the server's table has it, else a
    /// literal that adds it if it fits. `static_name` is the index of its
    /// name in the static table, 0 for none. True if an index was written.
    fn field(
        &mut self,
        static_name: usize,
        name: &'static str,
        value: &str,
        out: &mut Vec<u8>,
    ) -> bool {
        if let Some(at) = self
            .entries
            .iter()
            .position(|(n, v)| *n == name && v == value)
        {
            write_int(out, 0x80, 7, STATIC.len() + self.entries.len() - at);
            return true;
        }
        let size = entry_size(name.as_bytes(), value.as_bytes());
        if self.used + size <= self.room {
            self.used += size;
            self.entries.push((name, value.to_owned()));
            // Dynamic indexes count from the newest entry: every block
            // kept so far now points one entry off.
            self.settled.clear();
            write_int(out, 0x40, 6, static_name);
        } else {
            write_int(out, 0x00, 4, static_name);
        }
        if static_name == 0 {
            write_string(out, name);
        }
        write_string(out, value);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    fn decode_all(decoder: &mut Decoder, block: &[u8]) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        decoder
            .decode(block, |n, v| {
                fields.push((
                    String::from_utf8(n.to_vec()).unwrap(),
                    String::from_utf8(v.to_vec()).unwrap(),
                ))
            })
            .unwrap();
        fields
    }

    fn pairs(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_canonical_code_gives_the_codes_of_the_rfc() {
        // A few codes as RFC 7541 appendix B lists them: (symbol, code, bits).
        let huffman = &*HUFFMAN;
        let code_of = |symbol: u16| {
            let (length, symbols) = HUFFMAN_BY_LENGTH
                .iter()
                .find(|(_, s)| s.contains(&symbol))
                .unwrap();
            let rank = symbols.iter().position(|s| *s == symbol).unwrap() as u32;
            (huffman.first[*length] + rank, *length)
        };
        assert_eq!(code_of(u16::from(b'0')), (0x0, 5));
        assert_eq!(code_of(u16::from(b' ')), (0x14, 6));
        assert_eq!(code_of(u16::from(b':')), (0x5c, 7));
        assert_eq!(code_of(u16::from(b'&')), (0xf8, 8));
        assert_eq!(code_of(0), (0x1ff8, 13));
        assert_eq!(code_of(255), (0x3ffffee, 26));
        assert_eq!(code_of(EOS), (0x3fffffff, 30));
        assert_eq!(huffman.symbols.len(), 257);
    }

    #[test]
    fn decodes_the_rfcs_huffman_request_examples_with_their_table() {
        // RFC 7541, C.4: three requests on one connection.
        let mut decoder = Decoder::new();
        assert_eq!(
            decode_all(
                &mut decoder,
                &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")
            ),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
            ])
        );
        assert_eq!(
            decode_all(&mut decoder, &hex("8286 84be 5886 a8eb 1064 9cbf")),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache"),
            ])
        );
        assert_eq!(
            decode_all(
                &mut decoder,
                &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")
            ),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value"),
            ])
        );
        assert_eq!(decoder.size, 164);
    }

    #[test]
    fn a_full_table_evicts_its_oldest_entries() {
        let mut decoder = Decoder::new();
        // A size update to 100 bytes, then two 60-byte entries: only the
        // second stays.
        let mut block = Vec::new();
        write_int(&mut block, 0x20, 5, 100);
        for value in ["a".repeat(16), "b".repeat(16)] {
            write_int(&mut block, 0x40, 6, 0);
            write_string(&mut block, "x-abcdefghijk");
            write_string(&mut block, &value);
        }
        decode_all(&mut decoder, &block);
        assert_eq!(decoder.table.len(), 1);
        assert_eq!(
            decode_all(&mut decoder, &[0x80 | 62]),
            pairs(&[("x-abcdefghijk", &"b".repeat(16))])
        );
        assert!(decoder.decode(&[0x80 | 63], |_, _| {}).is_err());
    }

    #[test]
    fn bad_blocks_are_errors_not_panics() {
        let mut decoder = Decoder::new();
        for block in [
            &[0x80][..],                           // index 0
            &[0x80 | 70],                          // past both tables
            &[0x40, 0x05, b'a'],                   // a name cut short
            &[0x40, 0x81, 0x00], // a Huffman name of zeros: padding that is not ones
            &[0x3f, 0xff, 0xff, 0xff, 0xff, 0x7f], // a table size too large
            &[0x00, 0x81, 0xff, 0x81], // a name whose padding is 8 bits
        ] {
            assert!(decoder.decode(block, |_, _| {}).is_err(), "{block:?}");
        }
    }

    #[test]
    fn requests_after_the_first_are_indexes_that_the_decoder_reads_back() {
        let mut encoder = Encoder::new("127.0.0.1:50051".into());
        let mut decoder = Decoder::new();
        let path = "/auth.v1.AuthService/ValidateToken";
        let expected = pairs(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "127.0.0.1:50051"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]);
        let mut first = Vec::new();
        encoder.request(path, &mut first);
        assert_eq!(decode_all(&mut decoder, &first), expected);
        let mut second = Vec::new();
        encoder.request(path, &mut second);
        assert_eq!(second.len(), 6, "{second:?}");
        assert_eq!(decode_all(&mut decoder, &second), expected);

        // A second path adds only itself.
        let mut other = Vec::new();
        encoder.request("/grpc.health.v1.Health/Check", &mut other);
        let fields = decode_all(&mut decoder, &other);
        assert_eq!(fields[2].1, "/grpc.health.v1.Health/Check");
        let mut again = Vec::new();
        encoder.request(path, &mut again);
        assert_eq!(decode_all(&mut decoder, &again), expected);
        assert!(encoder.set_room(100).is_err());
    }

    #[test]
    fn a_server_without_a_table_gets_literals() {
        let mut encoder = Encoder::new("h:1".into());
        encoder.set_room(0).unwrap();
        let mut decoder = Decoder::new();
        for _ in 0..2 {
            let mut block = Vec::new();
            encoder.request("/p", &mut block);
            assert_eq!(
                decode_all(&mut decoder, &block)[2],
                pairs(&[(":path", "/p")])[0]
            );
        }
        assert!(decoder.table.is_empty());
    }
}
