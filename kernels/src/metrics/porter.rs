//! The Porter stemmer exactly as NLTK implements it in its default `NLTK_EXTENSIONS` mode, which
//! is what the `rouge-score` package uses (`nltk.stem.porter.PorterStemmer()`). Each step mirrors
//! a method of NLTK's `PorterStemmer`, including its departures from the 1980 paper (the
//! irregular-forms table, `ies`/`ied` on four-letter words, the `alli`, `fulli` and `logi` rules,
//! the two-letter `cvc` case and the `y → i` condition).

/// Words NLTK maps directly, bypassing the rules.
const IRREGULAR: [(&str, &str); 16] = [
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

type Word = Vec<char>;

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u')
}

/// NLTK's `_consonant_flags`: `y` is a consonant at the start or after a vowel.
fn consonant_flags(w: &[char]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let f = if is_vowel(c) {
            false
        } else if c == 'y' {
            i == 0 || !flags[i - 1]
        } else {
            true
        };
        flags.push(f);
    }
    flags
}

fn is_consonant(w: &[char], i: usize) -> bool {
    consonant_flags(&w[..=i])[i]
}

/// The measure m: number of vowel→consonant transitions.
fn measure(w: &[char]) -> usize {
    let f = consonant_flags(w);
    f.windows(2).filter(|p| !p[0] && p[1]).count()
}

fn contains_vowel(w: &[char]) -> bool {
    consonant_flags(w).iter().any(|c| !c)
}

fn ends_double_consonant(w: &[char]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

fn ends_cvc(w: &[char]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !matches!(w[n - 1], 'w' | 'x' | 'y'))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

fn ends_with(w: &[char], suffix: &str) -> bool {
    let s: Vec<char> = suffix.chars().collect();
    w.len() >= s.len() && w[w.len() - s.len()..] == s[..]
}

fn strip(w: &[char], suffix: &str) -> Word {
    w[..w.len() - suffix.chars().count()].to_vec()
}

fn join(stem: &[char], tail: &str) -> Word {
    let mut v = stem.to_vec();
    v.extend(tail.chars());
    v
}

/// A condition on the stem left after removing a suffix.
type Cond<'a> = Option<&'a dyn Fn(&[char]) -> bool>;

/// Suffix of a rule: a literal, or NLTK's `*d` (any double consonant).
enum Suffix<'a> {
    Lit(&'a str),
    DoubleConsonant,
}

/// NLTK's `_apply_rule_list`: the first rule whose suffix matches decides, whether or not its
/// condition holds.
fn apply_rules(w: &[char], rules: &[(Suffix<'_>, &str, Cond<'_>)]) -> Word {
    for (suffix, repl, cond) in rules {
        let stem = match suffix {
            Suffix::DoubleConsonant => {
                if !ends_double_consonant(w) {
                    continue;
                }
                w[..w.len() - 2].to_vec()
            }
            Suffix::Lit(s) => {
                if !ends_with(w, s) {
                    continue;
                }
                strip(w, s)
            }
        };
        return match cond {
            Some(c) if !c(&stem) => w.to_vec(),
            _ => join(&stem, repl),
        };
    }
    w.to_vec()
}

fn step1a(w: &[char]) -> Word {
    if ends_with(w, "ies") && w.len() == 4 {
        return join(&strip(w, "ies"), "ie");
    }
    apply_rules(
        w,
        &[
            (Suffix::Lit("sses"), "ss", None),
            (Suffix::Lit("ies"), "i", None),
            (Suffix::Lit("ss"), "ss", None),
            (Suffix::Lit("s"), "", None),
        ],
    )
}

fn step1b(w: &[char]) -> Word {
    if ends_with(w, "ied") {
        let tail = if w.len() == 4 { "ie" } else { "i" };
        return join(&strip(w, "ied"), tail);
    }
    if ends_with(w, "eed") {
        let stem = strip(w, "eed");
        return if measure(&stem) > 0 {
            join(&stem, "ee")
        } else {
            w.to_vec()
        };
    }
    let mut inter = None;
    for suffix in ["ed", "ing"] {
        if ends_with(w, suffix) {
            let s = strip(w, suffix);
            if contains_vowel(&s) {
                inter = Some(s);
                break;
            }
        }
    }
    let Some(inter) = inter else {
        return w.to_vec();
    };
    let last = inter.last().copied().unwrap_or(' ');
    let last_s = last.to_string();
    let not_lsz = |_: &[char]| !matches!(last, 'l' | 's' | 'z');
    let m1_cvc = |s: &[char]| measure(s) == 1 && ends_cvc(s);
    apply_rules(
        &inter,
        &[
            (Suffix::Lit("at"), "ate", None),
            (Suffix::Lit("bl"), "ble", None),
            (Suffix::Lit("iz"), "ize", None),
            (Suffix::DoubleConsonant, &last_s, Some(&not_lsz)),
            (Suffix::Lit(""), "e", Some(&m1_cvc)),
        ],
    )
}

fn step1c(w: &[char]) -> Word {
    let cond = |s: &[char]| s.len() > 1 && is_consonant(s, s.len() - 1);
    apply_rules(w, &[(Suffix::Lit("y"), "i", Some(&cond))])
}

fn positive(s: &[char]) -> bool {
    measure(s) > 0
}

fn step2(w: &[char]) -> Word {
    if ends_with(w, "alli") && positive(&strip(w, "alli")) {
        return step2(&join(&strip(w, "alli"), "al"));
    }
    let pos: &dyn Fn(&[char]) -> bool = &positive;
    // NLTK's `logi` rule tests the word minus its last three letters (`word[:-3]`), not the stem
    // left by removing "logi"; reproduce that quirk.
    let word_minus_3 = w.len() >= 3 && positive(&w[..w.len() - 3]);
    let logi = move |_: &[char]| word_minus_3;
    let rules: Vec<(Suffix<'_>, &str, Cond<'_>)> = vec![
        (Suffix::Lit("ational"), "ate", Some(pos)),
        (Suffix::Lit("tional"), "tion", Some(pos)),
        (Suffix::Lit("enci"), "ence", Some(pos)),
        (Suffix::Lit("anci"), "ance", Some(pos)),
        (Suffix::Lit("izer"), "ize", Some(pos)),
        (Suffix::Lit("bli"), "ble", Some(pos)),
        (Suffix::Lit("alli"), "al", Some(pos)),
        (Suffix::Lit("entli"), "ent", Some(pos)),
        (Suffix::Lit("eli"), "e", Some(pos)),
        (Suffix::Lit("ousli"), "ous", Some(pos)),
        (Suffix::Lit("ization"), "ize", Some(pos)),
        (Suffix::Lit("ation"), "ate", Some(pos)),
        (Suffix::Lit("ator"), "ate", Some(pos)),
        (Suffix::Lit("alism"), "al", Some(pos)),
        (Suffix::Lit("iveness"), "ive", Some(pos)),
        (Suffix::Lit("fulness"), "ful", Some(pos)),
        (Suffix::Lit("ousness"), "ous", Some(pos)),
        (Suffix::Lit("aliti"), "al", Some(pos)),
        (Suffix::Lit("iviti"), "ive", Some(pos)),
        (Suffix::Lit("biliti"), "ble", Some(pos)),
        (Suffix::Lit("fulli"), "ful", Some(pos)),
        (Suffix::Lit("logi"), "log", Some(&logi)),
    ];
    apply_rules(w, &rules)
}

fn step3(w: &[char]) -> Word {
    let pos: &dyn Fn(&[char]) -> bool = &positive;
    apply_rules(
        w,
        &[
            (Suffix::Lit("icate"), "ic", Some(pos)),
            (Suffix::Lit("ative"), "", Some(pos)),
            (Suffix::Lit("alize"), "al", Some(pos)),
            (Suffix::Lit("iciti"), "ic", Some(pos)),
            (Suffix::Lit("ical"), "ic", Some(pos)),
            (Suffix::Lit("ful"), "", Some(pos)),
            (Suffix::Lit("ness"), "", Some(pos)),
        ],
    )
}

fn step4(w: &[char]) -> Word {
    let gt1 = |s: &[char]| measure(s) > 1;
    let ion = |s: &[char]| measure(s) > 1 && matches!(s.last(), Some('s' | 't'));
    let g: &dyn Fn(&[char]) -> bool = &gt1;
    apply_rules(
        w,
        &[
            (Suffix::Lit("al"), "", Some(g)),
            (Suffix::Lit("ance"), "", Some(g)),
            (Suffix::Lit("ence"), "", Some(g)),
            (Suffix::Lit("er"), "", Some(g)),
            (Suffix::Lit("ic"), "", Some(g)),
            (Suffix::Lit("able"), "", Some(g)),
            (Suffix::Lit("ible"), "", Some(g)),
            (Suffix::Lit("ant"), "", Some(g)),
            (Suffix::Lit("ement"), "", Some(g)),
            (Suffix::Lit("ment"), "", Some(g)),
            (Suffix::Lit("ent"), "", Some(g)),
            (Suffix::Lit("ion"), "", Some(&ion)),
            (Suffix::Lit("ou"), "", Some(g)),
            (Suffix::Lit("ism"), "", Some(g)),
            (Suffix::Lit("ate"), "", Some(g)),
            (Suffix::Lit("iti"), "", Some(g)),
            (Suffix::Lit("ous"), "", Some(g)),
            (Suffix::Lit("ive"), "", Some(g)),
            (Suffix::Lit("ize"), "", Some(g)),
        ],
    )
}

fn step5a(w: &[char]) -> Word {
    if ends_with(w, "e") {
        let stem = strip(w, "e");
        let m = measure(&stem);
        if m > 1 || (m == 1 && !ends_cvc(&stem)) {
            return stem;
        }
    }
    w.to_vec()
}

fn step5b(w: &[char]) -> Word {
    // NLTK's condition looks at the word minus one letter, not the stem minus "ll".
    let cond_val = !w.is_empty() && measure(&w[..w.len() - 1]) > 1;
    let cond = move |_: &[char]| cond_val;
    apply_rules(w, &[(Suffix::Lit("ll"), "l", Some(&cond))])
}

/// Stems one word (lowercased first, as NLTK does by default).
pub fn porter_stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some((_, s)) = IRREGULAR.iter().find(|(w, _)| *w == lower) {
        return (*s).to_string();
    }
    // NLTK tests the length of the word as given (before lowercasing), in characters.
    if word.chars().count() <= 2 {
        return lower;
    }
    let mut w: Word = lower.chars().collect();
    for step in [step1a, step1b, step1c, step2, step3, step4, step5a, step5b] {
        w = step(&w);
    }
    w.into_iter().collect()
}
