//! MJPEG frames without Huffman tables.
//!
//! Many UVC cameras send "abbreviated" JPEGs that omit the DHT segment and rely on the standard
//! tables of JPEG Annex K.3 (the AVI MJPEG convention). The `image` crate's decoder only fills
//! those in when the frame carries an `AVI1` APP0 marker, so, like ffmpeg and nokhwa, we splice a
//! DHT segment with the standard tables in front of the first scan of any frame that has none.

const MARKER_PREFIX: u8 = 0xFF;
const START_OF_IMAGE: u8 = 0xD8;
const END_OF_IMAGE: u8 = 0xD9;
const START_OF_SCAN: u8 = 0xDA;
const DEFINE_HUFFMAN_TABLES: u8 = 0xC4;

/// Returns `jpeg` unchanged when it defines Huffman tables before its first scan (or is not a
/// JPEG the marker walk understands: the decoder will then report the problem), otherwise a copy
/// in `patched` with the standard tables inserted before the first scan.
pub(super) fn with_huffman_tables<'a>(jpeg: &'a [u8], patched: &'a mut Vec<u8>) -> &'a [u8] {
    let Some(scan) = first_scan_without_tables(jpeg) else {
        return jpeg;
    };
    patched.clear();
    patched.extend_from_slice(&jpeg[..scan]);
    patched.extend_from_slice(&STANDARD_TABLES_SEGMENT);
    patched.extend_from_slice(&jpeg[scan..]);
    patched
}

/// Byte offset of the first start-of-scan marker if no DHT segment precedes it.
fn first_scan_without_tables(jpeg: &[u8]) -> Option<usize> {
    if jpeg.get(..2)? != [MARKER_PREFIX, START_OF_IMAGE] {
        return None;
    }
    let mut position = 2;
    loop {
        if *jpeg.get(position)? != MARKER_PREFIX {
            return None;
        }
        match *jpeg.get(position + 1)? {
            // Fill byte before a marker.
            MARKER_PREFIX => position += 1,
            DEFINE_HUFFMAN_TABLES | END_OF_IMAGE => return None,
            START_OF_SCAN => return Some(position),
            // Markers without a length field: TEM and restart markers.
            0x01 | 0xD0..=0xD7 => position += 2,
            _ => {
                let length = jpeg.get(position + 2..position + 4)?;
                position += 2 + usize::from(u16::from_be_bytes([length[0], length[1]]));
            }
        }
    }
}

/// One table of Annex K.3: class/destination byte, code counts per length 1..=16, symbols.
struct HuffmanTable {
    class_and_id: u8,
    counts: [u8; 16],
    symbols: &'static [u8],
}

/// Tables K.3 to K.6: luminance DC, chrominance DC, luminance AC, chrominance AC.
const STANDARD_TABLES: [HuffmanTable; 4] = [
    HuffmanTable {
        class_and_id: 0x00,
        counts: [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        symbols: &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    },
    HuffmanTable {
        class_and_id: 0x01,
        counts: [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
        symbols: &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    },
    HuffmanTable {
        class_and_id: 0x10,
        counts: [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D],
        symbols: &[
            0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51,
            0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1,
            0x15, 0x52, 0xD1, 0xF0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18,
            0x19, 0x1A, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39,
            0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57,
            0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75,
            0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x92,
            0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
            0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3,
            0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8,
            0xD9, 0xDA, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2,
            0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
        ],
    },
    HuffmanTable {
        class_and_id: 0x11,
        counts: [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77],
        symbols: &[
            0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07,
            0x61, 0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09,
            0x23, 0x33, 0x52, 0xF0, 0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25,
            0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38,
            0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56,
            0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74,
            0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
            0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5,
            0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA,
            0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6,
            0xD7, 0xD8, 0xD9, 0xDA, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2,
            0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
        ],
    },
];

/// Marker (2 bytes) + length (2) + per table: class/id (1) + counts (16) + symbols.
const SEGMENT_LEN: usize = 4 + (1 + 16 + 12) * 2 + (1 + 16 + 162) * 2;

/// The four standard tables as one complete DHT segment, marker included.
const STANDARD_TABLES_SEGMENT: [u8; SEGMENT_LEN] = standard_tables_segment();

const fn standard_tables_segment() -> [u8; SEGMENT_LEN] {
    let mut segment = [0; SEGMENT_LEN];
    segment[0] = MARKER_PREFIX;
    segment[1] = DEFINE_HUFFMAN_TABLES;
    // The length field counts itself but not the marker; 418 fits in u16.
    let length = (SEGMENT_LEN - 2) as u16;
    segment[2] = (length >> 8) as u8;
    segment[3] = length as u8;
    let mut position = 4;
    let mut table = 0;
    while table < STANDARD_TABLES.len() {
        let HuffmanTable {
            class_and_id,
            counts,
            symbols,
        } = &STANDARD_TABLES[table];
        segment[position] = *class_and_id;
        position += 1;
        let mut i = 0;
        while i < counts.len() {
            segment[position] = counts[i];
            position += 1;
            i += 1;
        }
        let mut i = 0;
        while i < symbols.len() {
            segment[position] = symbols[i];
            position += 1;
            i += 1;
        }
        table += 1;
    }
    assert!(position == SEGMENT_LEN, "Huffman table sizes do not add up");
    segment
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_table_has_as_many_symbols_as_codes() {
        for table in &STANDARD_TABLES {
            let codes: usize = table.counts.iter().map(|&count| usize::from(count)).sum();
            assert_eq!(
                codes,
                table.symbols.len(),
                "table {:#04x}",
                table.class_and_id
            );
        }
        assert_eq!(&STANDARD_TABLES_SEGMENT[..4], &[0xFF, 0xC4, 0x01, 0xA2]);
    }

    #[test]
    fn tables_go_before_the_first_scan_only_when_missing() {
        // SOI, APP0 with 2 payload bytes, SOS with 2 payload bytes, entropy data, EOI.
        let abbreviated = [
            0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0xAA, 0xBB, 0xFF, 0xDA, 0x00, 0x04, 0x01, 0x02,
            0x12, 0xFF, 0xD9,
        ];
        let mut patched = Vec::new();
        let with_tables = with_huffman_tables(&abbreviated, &mut patched).to_vec();
        assert_eq!(with_tables.len(), abbreviated.len() + SEGMENT_LEN);
        assert_eq!(&with_tables[..8], &abbreviated[..8]);
        assert_eq!(&with_tables[8..8 + SEGMENT_LEN], &STANDARD_TABLES_SEGMENT);
        assert_eq!(&with_tables[8 + SEGMENT_LEN..], &abbreviated[8..]);

        // Already complete: handed back untouched, and no copy is made.
        let mut patched = Vec::new();
        assert_eq!(
            with_huffman_tables(&with_tables, &mut patched),
            &with_tables[..]
        );
        assert!(patched.is_empty());
        // Not a JPEG, or cut off inside the header: left for the decoder to reject.
        for bytes in [&b"GIF89a"[..], &abbreviated[..5], &[]] {
            assert_eq!(with_huffman_tables(bytes, &mut patched), bytes);
        }
    }
}
