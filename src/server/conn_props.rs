//! Property tests for `conn`: whatever the peer and the kernel do, what a
//! connection writes is the transform of what it read, in order, and no
//! input makes it panic.
//!
//! A script drives one `Connection` over the fake stream of `conn`'s unit
//! tests: input arrives in arbitrary pieces, reads take arbitrary chunks,
//! the kernel takes arbitrary amounts then says `WouldBlock`, handlers run
//! in any order (spurious events included), with arbitrary watermarks and
//! budgets. Then the peer half-closes and reads everything, and the
//! connection must finish with exactly the transformed input written.

use proptest::prelude::*;

use super::buffer::Watermarks;
use super::conn::tests::{FakeStream, Harness};
use super::conn::{CloseReason, Connection, Progress};
use crate::mode::{Mode, Service};

/// One step of the script.
#[derive(Debug, Clone)]
enum Step {
    /// `n` more bytes of the input reach the socket.
    Arrive(usize),
    /// The kernel can take `room` more bytes; a writable event follows.
    Writable(usize),
    /// A readable event; each read returns at most `chunk` bytes.
    Readable(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..300).prop_map(Step::Arrive),
        (0usize..200).prop_map(Step::Writable),
        (1usize..100).prop_map(Step::Readable),
    ]
}

fn run_script(
    input: &[u8],
    mode: Mode,
    high: usize,
    scratch: usize,
    budget_reads: u32,
    steps: &[Step],
) -> Result<(), TestCaseError> {
    let mut h = Harness::new(scratch);
    h.mode = mode;
    h.limits.watermarks = Watermarks::with_high(high);
    h.limits.budget_reads = budget_reads;
    let mut c = Connection::new(
        FakeStream {
            read_chunk: 1,
            ..FakeStream::default()
        },
        0,
    );
    // Keep the story, so that bytes in are counted too.
    c.tell_story("127.0.0.1:1".parse().expect("addr"), 0);
    let mut arrived = 0;
    for s in steps {
        let progress = match *s {
            Step::Arrive(n) => {
                let to = (arrived + n).min(input.len());
                c.stream_mut().input.extend_from_slice(&input[arrived..to]);
                arrived = to;
                Progress::Wait
            }
            Step::Writable(room) => {
                c.stream_mut().write_room = room;
                c.on_writable(&mut h.cx())
            }
            Step::Readable(chunk) => {
                c.stream_mut().read_chunk = chunk;
                c.on_readable(&mut h.cx())
            }
        };
        prop_assert!(
            !matches!(progress, Progress::Close(_)),
            "closed early: {progress:?}"
        );
        // Memory stays bounded: the high watermark plus one read.
        prop_assert!(c.pending_len() <= high + scratch);
    }
    // The peer sends the rest, half-closes, and reads everything.
    c.stream_mut().input.extend_from_slice(&input[arrived..]);
    c.stream_mut().eof = true;
    c.stream_mut().write_room = usize::MAX;
    let mut end = None;
    for _ in 0..input.len() + 10 {
        for progress in [c.on_writable(&mut h.cx()), c.on_readable(&mut h.cx())] {
            if let Progress::Close(reason) = progress {
                end = Some(reason);
            }
        }
        if end.is_some() {
            break;
        }
    }
    prop_assert_eq!(end, Some(CloseReason::PeerClosed));
    let mut expected = input.to_vec();
    mode.on_data(&mut expected);
    prop_assert_eq!(&c.stream().written, &expected);
    prop_assert_eq!(c.bytes(), (input.len() as u64, input.len() as u64));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn bytes_written_are_the_transform_of_bytes_read_in_order(
        input in proptest::collection::vec(any::<u8>(), 0..1500),
        upper in any::<bool>(),
        high in prop_oneof![Just(0usize), 0usize..256],
        scratch in 1usize..96,
        budget_reads in 1u32..6,
        steps in proptest::collection::vec(step(), 0..80),
    ) {
        let mode = if upper { Mode::Upper } else { Mode::Echo };
        run_script(&input, mode, high, scratch, budget_reads, &steps)?;
    }
}
