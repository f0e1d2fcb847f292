//! Primitive types of the protocol over a packet body: VarInt and VarLong (LEB128 of the
//! two's complement, at most 5 and 10 bytes), strings (VarInt byte length, UTF-8, a cap in
//! UTF-16 units as the vanilla server counts them), big-endian integers.

use crate::error::ProtoError;

/// A VarInt never takes more than this many bytes.
pub const VARINT_BYTES_MAX: usize = 5;
/// A VarLong never takes more than this many bytes.
pub const VARLONG_BYTES_MAX: usize = 10;
/// The longest string the protocol allows anywhere (chat JSON), in UTF-16 units.
pub const STRING_UNITS_MAX: usize = 32_767;

/// Appends `rest` as LEB128: seven bits a byte, low bits first, the high bit set on
/// every byte but the last.
fn write_leb128(out: &mut Vec<u8>, mut rest: u64) {
    loop {
        if rest & !0x7f == 0 {
            out.push(rest as u8);
            return;
        }
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
}

/// Appends `value` as a VarInt (its 32 bits, so a negative one takes 5 bytes).
pub fn write_varint(out: &mut Vec<u8>, value: i32) {
    write_leb128(out, u64::from(value as u32));
}

/// Appends `value` as a VarLong.
pub fn write_varlong(out: &mut Vec<u8>, value: i64) {
    write_leb128(out, value as u64);
}

/// How many bytes `value` takes as a VarInt.
pub fn varint_len(value: i32) -> usize {
    let mut scratch = Vec::with_capacity(VARINT_BYTES_MAX);
    write_varint(&mut scratch, value);
    scratch.len()
}

/// Appends a string: VarInt byte length, then UTF-8.
pub fn write_string(out: &mut Vec<u8>, value: &str) {
    write_varint(out, value.len() as i32);
    out.extend_from_slice(value.as_bytes());
}

/// A cursor over a packet body. Every read checks that the bytes are there.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, position: 0 }
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        &self.bytes[self.position..]
    }

    /// How many bytes have been read.
    pub fn position(&self) -> usize {
        self.position
    }

    pub fn is_empty(&self) -> bool {
        self.position == self.bytes.len()
    }

    /// Reads `n` bytes.
    pub fn read_bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtoError> {
        let end = self.position.checked_add(n).ok_or(ProtoError::Truncated { what })?;
        let slice = self
            .bytes
            .get(self.position..end)
            .ok_or(ProtoError::Truncated { what })?;
        self.position = end;
        Ok(slice)
    }

    fn read_array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ProtoError> {
        let slice = self.read_bytes(N, what)?;
        let mut array = [0u8; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    pub fn read_u8(&mut self, what: &'static str) -> Result<u8, ProtoError> {
        Ok(self.read_array::<1>(what)?[0])
    }

    pub fn read_u16(&mut self, what: &'static str) -> Result<u16, ProtoError> {
        Ok(u16::from_be_bytes(self.read_array(what)?))
    }

    pub fn read_i32(&mut self, what: &'static str) -> Result<i32, ProtoError> {
        Ok(i32::from_be_bytes(self.read_array(what)?))
    }

    pub fn read_i64(&mut self, what: &'static str) -> Result<i64, ProtoError> {
        Ok(i64::from_be_bytes(self.read_array(what)?))
    }

    pub fn read_u128(&mut self, what: &'static str) -> Result<u128, ProtoError> {
        Ok(u128::from_be_bytes(self.read_array(what)?))
    }

    /// LEB128 of at most `bytes_max` bytes; bits past 64 are dropped (callers keep the
    /// low 32 or 64, as the protocol does).
    fn read_leb128(&mut self, bytes_max: usize, what: &'static str) -> Result<u64, ProtoError> {
        let mut value: u64 = 0;
        for index in 0..bytes_max {
            let byte = self.read_u8(what)?;
            value |= u64::from(byte & 0x7f) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtoError::VarIntTooLong { max_bytes: bytes_max })
    }

    pub fn read_varint(&mut self, what: &'static str) -> Result<i32, ProtoError> {
        Ok(self.read_leb128(VARINT_BYTES_MAX, what)? as u32 as i32)
    }

    pub fn read_varlong(&mut self, what: &'static str) -> Result<i64, ProtoError> {
        Ok(self.read_leb128(VARLONG_BYTES_MAX, what)? as i64)
    }

    /// Reads a string of at most `units_max` UTF-16 units (the vanilla rule; the byte
    /// length may be at most three times that).
    pub fn read_string(&mut self, units_max: usize, what: &'static str) -> Result<&'a str, ProtoError> {
        let length = self.read_varint(what)?;
        if length < 0 {
            return Err(ProtoError::NegativeLength { what, length });
        }
        let length = length as usize;
        if length > units_max.saturating_mul(3) {
            return Err(ProtoError::StringTooLong {
                what,
                length,
                max: units_max,
            });
        }
        let bytes = self.read_bytes(length, what)?;
        let text = std::str::from_utf8(bytes).map_err(|_| ProtoError::InvalidText {
            what,
            encoding: "UTF-8",
        })?;
        let units = text.encode_utf16().count();
        if units > units_max {
            return Err(ProtoError::StringTooLong {
                what,
                length: units,
                max: units_max,
            });
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn varint_bytes(value: i32) -> Vec<u8> {
        let mut out = Vec::new();
        write_varint(&mut out, value);
        out
    }

    #[test]
    fn varints_match_the_protocol_documentation_examples() {
        // The wiki's table of sample VarInts.
        assert_eq!(varint_bytes(0), [0x00]);
        assert_eq!(varint_bytes(1), [0x01]);
        assert_eq!(varint_bytes(127), [0x7f]);
        assert_eq!(varint_bytes(128), [0x80, 0x01]);
        assert_eq!(varint_bytes(255), [0xff, 0x01]);
        assert_eq!(varint_bytes(25565), [0xdd, 0xc7, 0x01]);
        assert_eq!(varint_bytes(2_097_151), [0xff, 0xff, 0x7f]);
        assert_eq!(varint_bytes(i32::MAX), [0xff, 0xff, 0xff, 0xff, 0x07]);
        assert_eq!(varint_bytes(-1), [0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(varint_bytes(i32::MIN), [0x80, 0x80, 0x80, 0x80, 0x08]);
        let mut long = Vec::new();
        write_varlong(&mut long, -1);
        assert_eq!(long, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(varint_len(300), 2);
    }

    #[test]
    fn a_varint_of_six_bytes_is_refused() {
        let mut reader = Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(matches!(
            reader.read_varint("test"),
            Err(ProtoError::VarIntTooLong { max_bytes: 5 })
        ));
        let eleven = [0xffu8; 11];
        assert!(matches!(
            Reader::new(&eleven).read_varlong("test"),
            Err(ProtoError::VarIntTooLong { max_bytes: 10 })
        ));
    }

    #[test]
    fn a_truncated_varint_names_what_was_read() {
        let mut reader = Reader::new(&[0x80, 0x80]);
        match reader.read_varint("packet id") {
            Err(ProtoError::Truncated { what }) => assert_eq!(what, "packet id"),
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[test]
    fn strings_round_trip_and_respect_their_caps() {
        let mut out = Vec::new();
        write_string(&mut out, "héllo §a wörld");
        let mut reader = Reader::new(&out);
        assert_eq!(reader.read_string(16, "motd").unwrap(), "héllo §a wörld");
        assert!(reader.is_empty());

        let mut out = Vec::new();
        write_string(&mut out, "seventeen_chars_x");
        match Reader::new(&out).read_string(16, "player name") {
            Err(ProtoError::StringTooLong { what, length, max }) => {
                assert_eq!((what, length, max), ("player name", 17, 16))
            }
            other => panic!("expected StringTooLong, got {other:?}"),
        }
        // A byte length far beyond the cap is refused before reading the bytes.
        let mut out = Vec::new();
        write_varint(&mut out, 1_000_000);
        assert!(matches!(
            Reader::new(&out).read_string(255, "host"),
            Err(ProtoError::StringTooLong { .. })
        ));
    }

    #[test]
    fn bad_utf8_and_negative_and_truncated_strings_are_refused() {
        let bad = [0x02, 0xc3, 0x28];
        assert!(matches!(
            Reader::new(&bad).read_string(16, "name"),
            Err(ProtoError::InvalidText {
                what: "name",
                encoding: "UTF-8"
            })
        ));
        let mut negative = Vec::new();
        write_varint(&mut negative, -3);
        assert!(matches!(
            Reader::new(&negative).read_string(16, "name"),
            Err(ProtoError::NegativeLength { length: -3, .. })
        ));
        let truncated = [0x05, b'a', b'b'];
        assert!(matches!(
            Reader::new(&truncated).read_string(16, "name"),
            Err(ProtoError::Truncated { .. })
        ));
    }

    #[test]
    fn fixed_width_integers_are_big_endian() {
        let bytes = [0x63, 0xdd, 0, 0, 0, 0, 0, 0, 0, 42];
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.read_u16("port").unwrap(), 25565);
        assert_eq!(reader.read_i64("payload").unwrap(), 42);
        assert!(matches!(reader.read_i32("more"), Err(ProtoError::Truncated { .. })));
    }

    proptest! {
        #[test]
        fn every_varint_round_trips(value: i32) {
            let bytes = varint_bytes(value);
            prop_assert!(bytes.len() <= VARINT_BYTES_MAX);
            prop_assert_eq!(bytes.len(), varint_len(value));
            let mut reader = Reader::new(&bytes);
            prop_assert_eq!(reader.read_varint("v").unwrap(), value);
            prop_assert!(reader.is_empty());
        }

        #[test]
        fn every_varlong_round_trips(value: i64) {
            let mut bytes = Vec::new();
            write_varlong(&mut bytes, value);
            prop_assert!(bytes.len() <= VARLONG_BYTES_MAX);
            let mut reader = Reader::new(&bytes);
            prop_assert_eq!(reader.read_varlong("v").unwrap(), value);
            prop_assert!(reader.is_empty());
        }

        #[test]
        fn every_prefix_of_a_varint_is_truncated(value in 128i32..) {
            let bytes = varint_bytes(value);
            for cut in 0..bytes.len() {
                prop_assert!(
                    matches!(
                        Reader::new(&bytes[..cut]).read_varint("v"),
                        Err(ProtoError::Truncated { .. })
                    ),
                    "prefix of {} bytes of {:?}", cut, bytes
                );
            }
        }

        #[test]
        fn every_string_round_trips(text in "\\PC{0,40}") {
            let mut bytes = Vec::new();
            write_string(&mut bytes, &text);
            let mut reader = Reader::new(&bytes);
            prop_assert_eq!(reader.read_string(STRING_UNITS_MAX, "s").unwrap(), text.as_str());
        }
    }
}
