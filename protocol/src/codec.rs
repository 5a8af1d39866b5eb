//! Framing and encoding. A frame is a little-endian `u32` length followed by that many bytes of
//! postcard. The length is checked against the caller's bound before any allocation, so a
//! hostile peer cannot make us allocate more than the bound.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest control frame: big enough for a graph of a million tasks as JSON.
pub const MAX_CONTROL_FRAME: usize = 512 << 20;

/// What can go wrong reading or writing a frame.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The frame claimed more bytes than allowed.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Claimed length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The bytes were not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The QUIC stream failed.
    #[error("stream error: {0}")]
    Stream(String),
}

/// Encodes `msg` into a frame (length prefix included).
pub fn encode<M: Serialize + ?Sized>(msg: &M) -> Result<Vec<u8>, CodecError> {
    let mut out = postcard::to_extend(msg, vec![0u8; 4])?;
    let len = out.len() - 4;
    let prefix = u32::try_from(len).map_err(|_| CodecError::TooLarge {
        len,
        max: u32::MAX as usize,
    })?;
    out[..4].copy_from_slice(&prefix.to_le_bytes());
    Ok(out)
}

/// Decodes a frame body (without its length prefix).
pub fn decode<M: DeserializeOwned>(body: &[u8]) -> Result<M, CodecError> {
    Ok(postcard::from_bytes(body)?)
}

/// Writes one frame.
pub async fn write_frame<M: Serialize + ?Sized>(
    send: &mut quinn::SendStream,
    msg: &M,
) -> Result<(), CodecError> {
    let frame = encode(msg)?;
    send.write_all(&frame)
        .await
        .map_err(|e| CodecError::Stream(e.to_string()))
}

/// Reads one frame of at most `max` bytes. `Ok(None)` means the stream ended cleanly between
/// frames.
pub async fn read_frame<M: DeserializeOwned>(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<M>, CodecError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(CodecError::Truncated),
        Err(quinn::ReadExactError::ReadError(e)) => return Err(CodecError::Stream(e.to_string())),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(CodecError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(_) => CodecError::Truncated,
        quinn::ReadExactError::ReadError(e) => CodecError::Stream(e.to_string()),
    })?;
    decode(&body).map(Some)
}

/// Most messages in one frame written by [`batch_writer`].
pub const MAX_BATCH: usize = 65_536;

/// Sends every batch from `rx` on `send`, merging whatever is queued into one frame (at most
/// [`MAX_BATCH`] messages), until `rx` closes or the stream fails.
pub async fn batch_writer<M: Serialize>(
    mut send: quinn::SendStream,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Vec<M>>,
) {
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        if write_frame(&mut send, &batch).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::*;

    #[test]
    fn byte_runs_encode_as_the_byte_sequences_they_were() {
        // Graph bytes and outputs are written as one run (serde_bytes); postcard encodes a
        // run exactly as the sequence of u8 it was before, so peers of either build agree.
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        enum Before {
            Submit {
                run: u32,
                graph: Vec<u8>,
                wants: Vec<String>,
            },
        }
        let graph: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let now = FromClient::SubmitWire {
            run: 3,
            graph: graph.clone(),
            wants: vec!["k".into()],
        };
        let variant = postcard::to_allocvec(&now).unwrap()[0];
        let mut before = postcard::to_allocvec(&Before::Submit {
            run: 3,
            graph,
            wants: vec!["k".into()],
        })
        .unwrap();
        before[0] = variant;
        assert_eq!(postcard::to_allocvec(&now).unwrap(), before);
        let output = |o: Option<Vec<u8>>| FromWorker::Finished {
            id: 1,
            size: 3,
            duration_us: 2,
            output: o,
        };
        for o in [None, Some(vec![]), Some(vec![1, 2, 255])] {
            let bytes = postcard::to_allocvec(&output(o.clone())).unwrap();
            let plain: Option<Vec<u8>> = o.clone();
            let mut expected = postcard::to_allocvec(&(1 as TaskIdx, 3u64, 2u64, plain)).unwrap();
            expected.insert(0, bytes[0]);
            assert_eq!(bytes, expected);
            let back: FromWorker = postcard::from_bytes(&bytes).unwrap();
            assert!(matches!(back, FromWorker::Finished { output, .. } if output == o));
        }
    }

    #[test]
    fn round_trip_and_length_prefix() {
        let msg = vec![
            FromWorker::Fetched {
                task: 7,
                inputs: vec![(3, 1, 80)],
                fetch_us: 0,
            },
            FromWorker::Finished {
                id: 7,
                size: 800,
                duration_us: 12,
                output: None,
            },
        ];
        let frame = encode(&msg).unwrap();
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let back: Vec<FromWorker> = decode(&frame[4..]).unwrap();
        assert!(matches!(
            back[1],
            FromWorker::Finished {
                id: 7,
                size: 800,
                ..
            }
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for junk in [
            &b""[..],
            b"\xff\xff\xff\xff\xff",
            b"\x05garbage",
            &[0x80; 64],
        ] {
            assert!(decode::<Vec<ToWorker>>(junk).is_err() || junk.is_empty());
            let _ = decode::<Hello>(junk);
            let _ = decode::<Vec<FromClient>>(junk);
        }
    }
}
