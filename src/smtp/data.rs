//! The DATA reader: a byte-level state machine that ends the message only on
//! `<CRLF>.<CRLF>`, removes dot-stuffing (RFC 5321 4.5.2) and notes every framing
//! violation — bare CR, bare LF, NUL, over-long line — and an oversize message.
//!
//! After a violation it keeps reading until the real `<CRLF>.<CRLF>`, so whatever a
//! client hid behind a `<LF>.<LF>` (a second MAIL, RCPT, DATA …) is swallowed as part
//! of the refused message instead of being run or forwarded.

use std::sync::Arc;

use crate::config::BareLineEndings;
use crate::memory::{MemoryBudget, Reservation};
use crate::reply::Reply;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    /// At the start of a line that followed a real CRLF.
    LineStart,
    /// A `.` at the start of a line.
    Dot,
    /// `.` then CR at the start of a line: LF now ends the data.
    DotCr,
    /// Inside a line.
    Mid,
    /// A CR inside a line, waiting for its LF.
    Cr,
}

/// What went wrong with the framing of a message, counted while reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Violations {
    pub bare_lf: usize,
    pub bare_cr: usize,
    pub nul: usize,
    pub long_lines: usize,
    pub oversize: bool,
    /// The memory budget for message data ran out while reading it.
    pub no_memory: bool,
    /// The spool has no room for it beside the other messages being received.
    pub no_room: bool,
}

impl Violations {
    /// The check a refusal for these is logged under.
    pub fn check(&self) -> &'static str {
        if self.no_room {
            "queue.free_space"
        } else if self.no_memory {
            "limits.data_memory"
        } else {
            "framing"
        }
    }
}

/// Reads one message's data, chunk by chunk as it arrives.
pub struct DataReader {
    state: ReadState,
    /// Octets of the current line as received, CRLF included.
    line_len: usize,
    line_limit: usize,
    size_limit: usize,
    mode: BareLineEndings,
    /// The unstuffed message; emptied and no longer filled once it is over the limit.
    message: Vec<u8>,
    /// Octets of message content seen, including any beyond the limit.
    size: usize,
    violations: Violations,
    /// Lines ended so far (for the per-line deadline).
    lines: usize,
    /// What `message` holds of the memory budget.
    reservation: Reservation,
    /// What it holds of the room on the spool: what was declared, then what was
    /// read.
    room: Reservation,
}

/// How the DATA phase ended.
#[derive(Debug)]
pub enum DataOutcome {
    /// A well-formed message within the limits: the unstuffed bytes.
    Message(Vec<u8>),
    /// Refused; the reply says why. What was read of the message is kept for
    /// the archive (empty when it was over the size limit).
    Refused(Reply, Violations, Vec<u8>),
}

impl DataReader {
    /// `prefix` is written first (the Received: header); it does not count against
    /// the size limit the client was given.
    pub fn new(
        line_limit: usize,
        size_limit: usize,
        mode: BareLineEndings,
        prefix: Vec<u8>,
    ) -> Self {
        DataReader {
            state: ReadState::LineStart,
            line_len: 0,
            line_limit,
            size_limit,
            mode,
            message: prefix,
            size: 0,
            violations: Violations::default(),
            lines: 0,
            reservation: Reservation::default(),
            room: Reservation::default(),
        }
    }

    /// Holds room on the spool as the message grows (`room` starts with what
    /// MAIL declared): past it, the message is refused with `452 4.3.1`.
    pub fn with_room(mut self, room: Reservation) -> Self {
        self.room = room;
        self
    }

    /// The room on the spool the message holds, to keep until it is queued.
    pub fn take_room(&mut self) -> Reservation {
        self.room.take()
    }

    /// Holds the message against a memory budget: past it, the message is
    /// refused with `451 4.3.1` and what was read is let go.
    pub fn with_budget(mut self, budget: Arc<MemoryBudget>) -> Self {
        self.reservation = Reservation::new(budget);
        if !self.reservation.grow_to(self.message.capacity() as u64) {
            self.out_of_memory();
        }
        self
    }

    /// Lines ended so far.
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// The memory the message holds, to keep until the message is queued.
    pub fn take_reservation(&mut self) -> Reservation {
        self.reservation.take()
    }

    fn out_of_memory(&mut self) {
        self.violations.no_memory = true;
        self.message = Vec::new();
        self.reservation.release();
    }

    /// Feeds received bytes. Returns `Some(n)` when the end of data was found after
    /// `n` bytes of `input` (the rest belongs to the next command), `None` when all
    /// of `input` was consumed and more is needed.
    pub fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            if self.state == ReadState::Mid {
                // Fast path: copy up to the next byte that matters.
                let rest = &input[i..];
                let run = memchr::memchr3(b'\r', b'\n', 0, rest).unwrap_or(rest.len());
                if run > 0 {
                    self.line_len += run;
                    self.emit(&rest[..run]);
                    i += run;
                    continue;
                }
            }
            let b = input[i];
            i += 1;
            if self.step(b) {
                return Some(i);
            }
        }
        None
    }

    /// One byte through the state machine; true at the end of data.
    fn step(&mut self, b: u8) -> bool {
        match self.state {
            ReadState::LineStart => {
                self.line_len = 1;
                match b {
                    b'.' => self.state = ReadState::Dot,
                    _ => self.in_line(b),
                }
            }
            ReadState::Dot => {
                self.line_len += 1;
                match b {
                    b'\r' => self.state = ReadState::DotCr,
                    // Not an end: only CRLF.CRLF is. The dot stays as text.
                    b'\n' => {
                        self.emit(b".");
                        self.bare_lf();
                    }
                    // A stuffed dot: RFC 5321 4.5.2 removes it.
                    _ => self.in_line(b),
                }
            }
            ReadState::DotCr => match b {
                b'\n' => return true,
                _ => {
                    self.emit(b".");
                    self.bare_cr();
                    self.in_line(b);
                }
            },
            ReadState::Mid => {
                self.line_len += 1;
                self.in_line(b);
            }
            ReadState::Cr => match b {
                b'\n' => {
                    self.line_len += 1;
                    self.emit(b"\r\n");
                    self.end_line();
                    self.state = ReadState::LineStart;
                }
                _ => {
                    self.bare_cr();
                    self.line_len = 1;
                    self.in_line(b);
                }
            },
        }
        false
    }

    /// A byte inside a line (not the stuffing dot, not the LF of a CRLF).
    fn in_line(&mut self, b: u8) {
        match b {
            b'\r' => self.state = ReadState::Cr,
            b'\n' => self.bare_lf(),
            0 => {
                self.violations.nul += 1;
                self.state = ReadState::Mid;
            }
            _ => {
                self.emit(&[b]);
                self.state = ReadState::Mid;
            }
        }
    }

    /// A bare LF or CR ends the line in normalize mode, but the next line does not
    /// count as a line start: a `.` there can neither end the data nor be unstuffed.
    fn bare_lf(&mut self) {
        self.violations.bare_lf += 1;
        self.bare_line_end();
    }

    fn bare_cr(&mut self) {
        self.violations.bare_cr += 1;
        self.bare_line_end();
    }

    fn bare_line_end(&mut self) {
        if self.mode == BareLineEndings::Normalize {
            self.emit(b"\r\n");
        }
        self.end_line();
        self.line_len = 0;
        self.state = ReadState::Mid;
    }

    fn end_line(&mut self) {
        self.lines += 1;
        if self.line_len > self.line_limit {
            self.violations.long_lines += 1;
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.size += bytes.len();
        if self.violations.oversize || self.violations.no_memory || self.violations.no_room {
            return;
        }
        if self.size > self.size_limit {
            self.violations.oversize = true;
            self.message = Vec::new();
            self.reservation.release();
            return;
        }
        if !self.room.grow_to(self.size as u64) {
            self.violations.no_room = true;
            self.message = Vec::new();
            self.reservation.release();
            self.room.release();
            return;
        }
        let needed = self.message.len() + bytes.len();
        if needed > self.message.capacity() {
            // A quarter more each time: the budget counts what is really held (a
            // doubling vector holds up to twice its message), and with large
            // buffers mapped apart (see main.rs) growing one costs no copy.
            let grown = needed.max(self.message.capacity() * 5 / 4).max(64 * 1024);
            if !self.reservation.grow_to(grown as u64) {
                return self.out_of_memory();
            }
            self.message.reserve_exact(grown - self.message.len());
        }
        self.message.extend_from_slice(bytes);
    }

    /// The verdict on the framing once the end of data was seen.
    pub fn finish(mut self) -> DataOutcome {
        // A last line that was still open when the data ended is checked too.
        if self.line_len > self.line_limit {
            self.violations.long_lines += 1;
        }
        let v = self.violations;
        let reject_bare = self.mode == BareLineEndings::Reject;
        let refusal = if v.no_room {
            Some(Reply::new(
                452,
                "4.3.1",
                "Insufficient system storage; try again later",
            ))
        } else if v.no_memory {
            Some(Reply::new(
                451,
                "4.3.1",
                "Insufficient system resources: too much mail arriving at once; try again later",
            ))
        } else if v.nul > 0 {
            Some(Reply::new(
                500,
                "5.5.2",
                "Message refused: NUL character in message data",
            ))
        } else if reject_bare && v.bare_lf > 0 {
            Some(Reply::new(
                500,
                "5.5.2",
                "Message refused: bare LF in message data; lines must end with CRLF (RFC 5321 2.3.8)",
            ))
        } else if reject_bare && v.bare_cr > 0 {
            Some(Reply::new(
                500,
                "5.5.2",
                "Message refused: bare CR in message data; lines must end with CRLF (RFC 5321 2.3.8)",
            ))
        } else if v.long_lines > 0 {
            Some(Reply::new(
                500,
                "5.5.2",
                format!(
                    "Message refused: line longer than {} octets (RFC 5321 4.5.3.1.6)",
                    self.line_limit
                ),
            ))
        } else if v.oversize {
            Some(Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            ))
        } else {
            None
        };
        match refusal {
            Some(reply) => DataOutcome::Refused(reply, v, std::mem::take(&mut self.message)),
            None => DataOutcome::Message(std::mem::take(&mut self.message)),
        }
    }

    /// Octets of content seen so far (beyond the limit too).
    pub fn size(&self) -> usize {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8], mode: BareLineEndings) -> (Option<usize>, DataOutcome) {
        let mut reader = DataReader::new(1000, 10_000, mode, Vec::new());
        let end = reader.feed(input);
        (end, reader.finish())
    }

    fn message(input: &[u8]) -> Vec<u8> {
        match read(input, BareLineEndings::Reject) {
            (Some(_), DataOutcome::Message(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ends_on_crlf_dot_crlf_and_unstuffs() {
        let input = b"Subject: x\r\n\r\n..hidden\r\n.x\r\nend\r\n.\r\nQUIT\r\n";
        assert_eq!(message(input), b"Subject: x\r\n\r\n.hidden\r\nx\r\nend\r\n");
        let (end, _) = read(input, BareLineEndings::Reject);
        assert_eq!(&input[end.unwrap()..], b"QUIT\r\n");
    }

    #[test]
    fn empty_message() {
        assert_eq!(message(b".\r\n"), b"");
    }

    #[test]
    fn byte_at_a_time_gives_the_same_result() {
        let input = b"a\r\n..b\r\n\r\n.\r\n";
        let mut reader = DataReader::new(1000, 10_000, BareLineEndings::Reject, Vec::new());
        let mut end = None;
        for (i, b) in input.iter().enumerate() {
            if reader.feed(std::slice::from_ref(b)).is_some() {
                end = Some(i + 1);
                break;
            }
        }
        assert_eq!(end, Some(input.len()));
        match reader.finish() {
            DataOutcome::Message(m) => assert_eq!(m, b"a\r\n.b\r\n\r\n"),
            other => panic!("{other:?}"),
        }
    }

    /// Every lenient end-of-data a backend might honour is data here, not an end.
    #[test]
    fn smuggling_terminators_do_not_end_data() {
        let smuggled =
            b"MAIL FROM:<x@evil.test>\r\nRCPT TO:<y@example.test>\r\nDATA\r\nsmuggled\r\n";
        for fake in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r.\r\n",
            b"\r\n.\r",
            b"\r.\n",
            b"\r\n\x00.\r\n",
            b"\r\n.\n",
            b"\r\n.\x00\r\n",
        ] {
            for mode in [BareLineEndings::Reject, BareLineEndings::Normalize] {
                let mut input = b"Subject: a\r\n\r\nbody".to_vec();
                input.extend_from_slice(fake);
                input.extend_from_slice(smuggled);
                input.extend_from_slice(b".\r\n");
                let (end, outcome) = read(&input, mode);
                assert_eq!(end, Some(input.len()), "{fake:?} {mode:?} ended early");
                let nul = fake.contains(&0);
                match (mode, outcome) {
                    (BareLineEndings::Reject, DataOutcome::Refused(reply, _, _)) => {
                        assert_eq!((reply.code, reply.status.as_str()), (500, "5.5.2"));
                    }
                    (BareLineEndings::Normalize, DataOutcome::Refused(reply, _, _)) if nul => {
                        assert_eq!(reply.code, 500);
                    }
                    (BareLineEndings::Normalize, DataOutcome::Message(m)) => {
                        // Normalised: every line ends in CRLF and the fake end is text.
                        assert!(!m.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
                        assert!(m.ends_with(b"smuggled\r\n"));
                    }
                    (mode, other) => panic!("{fake:?} {mode:?}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn oversize_reads_to_the_end_then_refuses() {
        let mut reader = DataReader::new(1000, 10, BareLineEndings::Reject, Vec::new());
        let input = b"0123456789\r\n0123456789\r\n.\r\n";
        assert_eq!(reader.feed(input), Some(input.len()));
        match reader.finish() {
            DataOutcome::Refused(reply, v, _) => {
                assert_eq!((reply.code, reply.status.as_str()), (552, "5.3.4"));
                assert!(v.oversize);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn line_length_counts_crlf() {
        let exact = [vec![b'a'; 998], b"\r\n.\r\n".to_vec()].concat();
        assert!(matches!(
            read(&exact, BareLineEndings::Reject).1,
            DataOutcome::Message(_)
        ));
        let over = [vec![b'a'; 999], b"\r\n.\r\n".to_vec()].concat();
        match read(&over, BareLineEndings::Reject).1 {
            DataOutcome::Refused(reply, v, _) => {
                assert_eq!(reply.code, 500);
                assert_eq!(v.long_lines, 1);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prefix_is_kept_and_not_counted() {
        let mut reader = DataReader::new(
            1000,
            3,
            BareLineEndings::Reject,
            b"Received: x\r\n".to_vec(),
        );
        reader.feed(b"a\r\n.\r\n");
        match reader.finish() {
            DataOutcome::Message(m) => assert_eq!(m, b"Received: x\r\na\r\n"),
            other => panic!("{other:?}"),
        }
    }
}
