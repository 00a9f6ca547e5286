//! The 8-4-4-4-12 text form of a UUID. oprelay makes two kinds of its own (the derived
//! `p_source_id`, Splunk HEC channel ids) and needs no UUID library beyond this layout.

/// Lower-case hex in the hyphenated layout 1Password, Panther and Splunk all use.
pub fn uuid_text(bytes: [u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_8_4_4_4_12() {
        let bytes = [
            0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17,
            0x40, 0xff,
        ];
        assert_eq!(uuid_text(bytes), "123e4567-e89b-12d3-a456-4266141740ff");
        assert_eq!(uuid_text([0; 16]), "00000000-0000-0000-0000-000000000000");
    }
}
