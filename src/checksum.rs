//! The Internet checksum (RFC 1071), for the frames etran builds in user space (slow-path TCP
//! segments, benchmark frames).

/// Ones' complement sum of `data` as big-endian 16-bit words (an odd last byte padded with
/// zero), added to `init` and folded to 16 bits; not inverted.
pub fn sum16(init: u32, data: &[u8]) -> u32 {
    let mut sum = init;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// The checksum to store in a header whose checksum field is zero.
pub fn checksum(data: &[u8]) -> u16 {
    !(sum16(0, data) as u16)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc1071_example_and_verification() {
        // RFC 1071 section 3: the sum of these words is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(super::sum16(0, &data), 0xddf2);
        let mut with_sum = data.to_vec();
        with_sum.extend_from_slice(&super::checksum(&data).to_be_bytes());
        assert_eq!(super::sum16(0, &with_sum), 0xffff, "a correct checksum verifies");
    }
}
