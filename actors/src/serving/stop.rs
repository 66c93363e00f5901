//! Stop sequences over streamed text: the generator stops on stop *tokens*; the client's `stop`
//! strings are found in the detokenised text, which arrives in pieces that may split a stop
//! string anywhere. Text that could be the start of a stop string is held back until the next
//! piece decides, so a stop string never reaches the client, even in part.

/// What one piece of text yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fed {
    /// Text that can be sent now (possibly empty, when all of it is held back).
    Text(String),
    /// A stop string was found: this is the text before it; generation should end.
    Stopped(String),
}

/// Finds the client's stop strings in a stream of text pieces.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// Takes the next piece of text.
    pub fn push(&mut self, piece: &str) -> Fed {
        if self.stopped {
            return Fed::Stopped(String::new());
        }
        self.held.push_str(piece);
        // The earliest stop string wins; at equal positions, the first listed.
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = found {
            self.stopped = true;
            let before = self.held[..at].to_string();
            self.held.clear();
            return Fed::Stopped(before);
        }
        let keep = self.longest_partial_suffix();
        let emit_to = self.held.len() - keep;
        let emitted = self.held[..emit_to].to_string();
        self.held.drain(..emit_to);
        Fed::Text(emitted)
    }

    /// The text still held back, once generation ended without a stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Whether a stop string was found.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Bytes at the end of the held text that begin some stop string (on a char boundary).
    fn longest_partial_suffix(&self) -> usize {
        self.held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .map_or(0, |i| self.held.len() - i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                Fed::Text(t) => out.push_str(&t),
                Fed::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn a_stop_split_across_pieces_is_found_and_never_emitted() {
        let mut m = StopMatcher::new(vec!["\n\nUser:".into()]);
        assert_eq!(m.push("Hi there"), Fed::Text("Hi there".into()));
        assert_eq!(
            m.push("!\n"),
            Fed::Text("!".into()),
            "the newline may start the stop"
        );
        assert_eq!(m.push("\nUs"), Fed::Text(String::new()));
        assert_eq!(m.push("er: more"), Fed::Stopped(String::new()));
        assert!(m.is_stopped());
        assert_eq!(run(&["END"], &["abcE", "N", "Dxyz"]), ("abc".into(), true));
    }

    #[test]
    fn held_text_is_released_when_it_turns_out_not_to_be_a_stop() {
        assert_eq!(
            run(&["\n\n"], &["a\n", "b\n", "c"]),
            ("a\nb\nc".into(), false)
        );
        assert_eq!(
            run(&["xyz"], &["ab", "xy"]),
            ("abxy".into(), false),
            "finish flushes"
        );
    }

    #[test]
    fn the_earliest_stop_wins_and_unicode_is_respected() {
        assert_eq!(run(&["c", "ab"], &["xabc"]), ("x".into(), true));
        assert_eq!(run(&["é!"], &["caf", "é", "s"]), ("cafés".into(), false));
        assert_eq!(run(&["é!"], &["caf", "é", "!"]), ("caf".into(), true));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(
            run(&[""], &["a"]),
            ("a".into(), false),
            "empty stops are ignored"
        );
    }
}
