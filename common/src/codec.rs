//! The protobuf codec every FerrisDB gRPC service and client uses: prost's, except that a
//! message that does not decode is the sender's fault, `invalid_argument` with a FerrisDB
//! code, rather than prost's `INTERNAL` (which would read as a bug in the receiver); and each
//! call's first buffer is 1 KiB instead of tonic's 8 KiB (see `CALL_BUFFER_BYTES`).

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf};
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::error::Error;

/// Prost's codec with [`Decoder`] in place of prost's decoder and smaller first buffers
/// (`codec_path` in build.rs).
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec { _pd: PhantomData }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder(ProstDecoder::new(buffer_settings()))
    }
}

/// The first buffer a call encodes or decodes into. tonic's default is 8 KiB, allocated
/// afresh for every call; with glibc's allocator that size comes from the top of the
/// thread's heap, and returning it shrinks the heap again, so each call paid for growing it
/// (`mprotect`) and faulting its pages back in — 8 % of the compute's CPU on the commit path
/// (docs/benchmarks/request-path-profile.md). Up to 1 KiB is served from glibc's per-thread
/// cache; most messages (a point read, a commit, its answer) fit, and larger ones grow the
/// buffer to their exact length once.
const CALL_BUFFER_BYTES: usize = 1024;

fn buffer_settings() -> BufferSettings {
    // The yield threshold is tonic's default: it bounds how much a stream encodes before
    // handing bytes to the transport.
    BufferSettings::new(CALL_BUFFER_BYTES, 32 << 10)
}

/// Prost's decoder, answering an undecodable message with `invalid_argument`.
#[derive(Debug, Clone)]
pub struct Decoder<U>(ProstDecoder<U>);

impl<U: Message + Default> tonic::codec::Decoder for Decoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            Error::invalid(format!(
                "the message is not valid protobuf: {}",
                status.message()
            ))
            .into()
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
