//! Frames at rest: a published frame as the store and the resume history keep it, either as it was sent
//! or packed with zstd and a dictionary trained on notification frames.
//!
//! A frame is published plain (every recipient gets those bytes at once); the packer
//! ([`crate::stream::packer`]) packs it afterwards, in the background, and the stream swaps the packed
//! form in where the same version is still held. A call resource of ~1.3 KB packs to ~150 bytes: with
//! 100,000 live calls and a full history that is the difference between the frames costing ~2 KB per call
//! and ~0.2 KB. Reading a packed frame (REST, a snapshot, a resume) unpacks it: about a microsecond.
//!
//! The dictionary (`frames.dict`, made by `scripts/train-frame-dictionary.sh`) only sets how well frames
//! pack; every frame is checked to unpack to its exact bytes before its packed form is used.

use bytes::Bytes;
use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::{DecoderDictionary, EncoderDictionary};
use zstd::zstd_safe::CParameter;

/// The dictionary both sides use, trained on simulated notification frames.
const DICTIONARY: &[u8] = include_bytes!("frames.dict");
/// zstd's fastest regular level: packing runs on the gateway's spare CPU, and higher levels gain ~1%.
const LEVEL: i32 = 1;

/// A frame as kept at rest. Cloning is constant-time.
#[derive(Debug, Clone)]
pub enum Kept {
    /// As published.
    Plain(Bytes),
    /// Packed; unpacks to `len` bytes.
    Packed {
        /// The zstd frame (no checksum, no dictionary id, no content size: the length is kept here).
        packed: Arc<[u8]>,
        /// The plain frame's length.
        len: u32,
    },
}

/// A packed frame that does not unpack: a fault of this process, never of its input.
#[derive(Debug, thiserror::Error)]
#[error("a packed frame does not unpack: {0}")]
pub struct UnpackError(String);

impl UnpackError {
    pub(crate) fn new(why: &str) -> Self {
        Self(why.to_owned())
    }
}

impl Kept {
    /// The frame's bytes: shared when plain, unpacked when packed.
    pub fn plain(&self) -> Result<Bytes, UnpackError> {
        match self {
            Kept::Plain(bytes) => Ok(bytes.clone()),
            Kept::Packed { packed, len } => unpack(packed, *len as usize).map(Bytes::from),
        }
    }

    /// Whether it is still as published.
    pub fn is_plain(&self) -> bool {
        matches!(self, Kept::Plain(_))
    }
}

/// Packs frames; one per packing thread (it holds zstd's working memory, ~1 MiB).
pub struct Packer {
    compressor: Compressor<'static>,
}

impl Packer {
    /// A packer with the built-in dictionary.
    pub fn new() -> std::io::Result<Self> {
        let mut compressor = Compressor::with_prepared_dictionary(encoder_dictionary())?;
        compressor.set_parameter(CParameter::ChecksumFlag(false))?;
        compressor.set_parameter(CParameter::DictIdFlag(false))?;
        compressor.set_parameter(CParameter::ContentSizeFlag(false))?;
        Ok(Self { compressor })
    }

    /// `frame` packed, when packing makes it smaller and it unpacks to exactly `frame`; else `None`
    /// (the frame is then kept plain).
    pub fn pack(&mut self, frame: &[u8]) -> Option<Kept> {
        let len = u32::try_from(frame.len()).ok()?;
        let packed = self.compressor.compress(frame).ok()?;
        if packed.len() >= frame.len() {
            return None;
        }
        match unpack(&packed, frame.len()) {
            Ok(unpacked) if unpacked == frame => Some(Kept::Packed {
                packed: packed.into(),
                len,
            }),
            _ => None,
        }
    }
}

fn encoder_dictionary() -> &'static EncoderDictionary<'static> {
    static DICT: OnceLock<EncoderDictionary<'static>> = OnceLock::new();
    DICT.get_or_init(|| EncoderDictionary::copy(DICTIONARY, LEVEL))
}

fn decoder_dictionary() -> &'static DecoderDictionary<'static> {
    static DICT: OnceLock<DecoderDictionary<'static>> = OnceLock::new();
    DICT.get_or_init(|| DecoderDictionary::copy(DICTIONARY))
}

thread_local! {
    /// zstd's decompression context is ~100 KiB: one per thread that reads packed frames, made once.
    static DECOMPRESSOR: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
}

fn unpack(packed: &[u8], len: usize) -> Result<Vec<u8>, UnpackError> {
    DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let decompressor = match &mut *cell {
            Some(decompressor) => decompressor,
            empty => empty.insert(
                Decompressor::with_prepared_dictionary(decoder_dictionary())
                    .map_err(|error| UnpackError(error.to_string()))?,
            ),
        };
        let plain = decompressor
            .decompress(packed, len)
            .map_err(|error| UnpackError(error.to_string()))?;
        if plain.len() == len {
            Ok(plain)
        } else {
            Err(UnpackError(format!("{} bytes, not {len}", plain.len())))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: &str = r#"{"type":"notification","epoch":"18ecbdc26987cb1d-7450","seq":42,"channel":"/v2/me/calls","data":{"notificationType":"StatusChange","call":{"id":"QK59HK4FS927D7FUU41G6IE400000000","state":"Established","callUuid":"QK59HK4FS927D7FUU41G6IE400000000","connId":"006f000000000000","deviceUri":"http://127.0.0.1:8080/api/v2/devices/fb5df13b-5c9d-5880-b795-abcdd6ccf803","participants":[{"e164Number":"+14155550000","formattedPhoneNumber":"+1 415-555-0000","phoneNumber":"+14155550000","digits":"14155550000","country":{"name":"United States","code":"US","callingCode":"1"},"location":"San Francisco, CA","localPhoneNumber":"(415) 555-0000","E164digits":"14155550000"}],"dnis":"8001","callType":"Inbound","capabilities":["Hangup","Hold","SendDtmf","InitiateTransfer","SingleStepTransfer","InitiateConference","SingleStepConference","StartCallRecording","AttachUserData","UpdateUserData","DeleteUserData","DeleteUserDataPair"],"userData":{"AccountNumber":"00000000","Segment":"Gold"},"duration":"0","mute":"Off","recordingState":"Stopped","supervisorListeningIn":false,"monitoredUserMuted":false,"monitoring":false,"uri":"http://127.0.0.1:8080/api/v2/me/calls/QK59HK4FS927D7FUU41G6IE400000000","path":"/calls/QK59HK4FS927D7FUU41G6IE400000000"},"phoneNumber":"10000","messageType":"CallStateChangeMessage"}}"#;

    #[test]
    fn a_notification_frame_packs_small_and_unpacks_to_its_bytes() {
        let mut packer = Packer::new().unwrap();
        let kept = packer.pack(FRAME.as_bytes()).expect("packs");
        assert!(!kept.is_plain());
        let Kept::Packed { packed, len } = &kept else {
            panic!("packed");
        };
        assert_eq!(*len as usize, FRAME.len());
        assert!(
            packed.len() * 5 < FRAME.len(),
            "{} bytes packed from {}",
            packed.len(),
            FRAME.len()
        );
        assert_eq!(kept.plain().unwrap(), FRAME.as_bytes());
        // Again on this thread (its decompressor is reused) and on another (a new one).
        assert_eq!(kept.plain().unwrap(), FRAME.as_bytes());
        let elsewhere = kept.clone();
        let unpacked = std::thread::spawn(move || elsewhere.plain().unwrap())
            .join()
            .unwrap();
        assert_eq!(unpacked, FRAME.as_bytes());
    }

    #[test]
    fn what_packing_cannot_shrink_stays_plain() {
        let mut packer = Packer::new().unwrap();
        assert!(packer.pack(b"").is_none());
        assert!(packer.pack(b"{}").is_none());
        // Bytes no dictionary helps with.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..512)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        assert!(packer.pack(&noise).is_none());
    }

    #[test]
    fn a_damaged_packed_frame_is_an_error_not_a_wrong_frame() {
        let mut packer = Packer::new().unwrap();
        let Some(Kept::Packed { packed, len }) = packer.pack(FRAME.as_bytes()) else {
            panic!("packs");
        };
        let mut damaged = packed.to_vec();
        damaged.truncate(damaged.len() / 2);
        let damaged = Kept::Packed {
            packed: damaged.into(),
            len,
        };
        assert!(damaged.plain().is_err());
        let wrong_length = Kept::Packed {
            packed,
            len: len + 1,
        };
        assert!(wrong_length.plain().is_err());
    }
}
