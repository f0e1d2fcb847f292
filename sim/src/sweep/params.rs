//! Sweep parameters: `--param PATH=VALUES` parsed into a list or a span of values, the
//! grid (cartesian product) of several, and seeded random points.
//!
//! Values: `lo..hi:step` (numbers, `hi` included), `lo..hi` (random search only: drawn
//! uniformly), or a comma list (`5m,10m,20m`, `true,false`, any strings).

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::SweepError;

/// More configurations than this need `--random`.
pub const GRID_MAX: usize = 100_000;

/// One parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

impl ParamValue {
    /// `true`/`false`, an integer, a float, or else the text itself.
    pub fn parse_literal(text: &str) -> ParamValue {
        let text = text.trim();
        match text {
            "true" => return ParamValue::Bool(true),
            "false" => return ParamValue::Bool(false),
            _ => {}
        }
        if let Ok(i) = text.parse::<i64>() {
            return ParamValue::Int(i);
        }
        if text.chars().any(|c| c.is_ascii_digit())
            && let Ok(f) = text.parse::<f64>()
            && f.is_finite()
        {
            return ParamValue::Float(f);
        }
        ParamValue::Str(text.to_string())
    }

    pub(super) fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Int(i) => Some(*i as f64),
            ParamValue::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ParamValue::Int(i) => serde_json::Value::from(*i),
            ParamValue::Float(f) => serde_json::Value::from(*f),
            ParamValue::Bool(b) => serde_json::Value::from(*b),
            ParamValue::Str(s) => serde_json::Value::from(s.as_str()),
        }
    }
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) if x.fract() == 0.0 && x.abs() < 1e15 => write!(f, "{x:.1}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Str(s) => write!(f, "{s}"),
        }
    }
}

/// The values a parameter takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Listed, or a range with a step.
    List(Vec<ParamValue>),
    /// `lo..hi` without a step: random search draws uniformly (integers if both are).
    Span { lo: ParamValue, hi: ParamValue },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// As given on the command line (left of `=`).
    pub given: String,
    /// The full dotted path in the scenario file.
    pub path: String,
    pub values: Values,
}

/// Parse `path=values`. The path is completed against the scenario later
/// ([`Param::path`] is the given path until then).
pub fn parse_param(text: &str) -> Result<Param, SweepError> {
    let bad = |message: String| SweepError::Param {
        param: text.to_string(),
        message,
    };
    let (path, spec) = text.split_once('=').ok_or_else(|| {
        bad("expected PATH=VALUES, e.g. core.policy.reactive.scale_up_free_mib_below=4096..16384:4096".into())
    })?;
    let path = path.trim();
    if path.is_empty() || path.split('.').any(|s| s.trim().is_empty()) {
        return Err(bad(format!("{path:?} is not a dotted path")));
    }
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(bad("no values".into()));
    }
    let values = if let Some((lo, rest)) = spec.split_once("..")
        && !spec.contains(',')
    {
        let (hi, step) = match rest.split_once(':') {
            Some((hi, step)) => (hi, Some(step)),
            None => (rest, None),
        };
        let number = |what: &str, s: &str| match ParamValue::parse_literal(s) {
            v @ (ParamValue::Int(_) | ParamValue::Float(_)) => Ok(v),
            _ => Err(bad(format!("the range's {what} {s:?} is not a number"))),
        };
        let (lo, hi) = (number("start", lo)?, number("end", hi)?);
        if lo.as_f64() > hi.as_f64() {
            return Err(bad(format!("the range's start {lo} is above its end {hi}")));
        }
        match step {
            None => Values::Span { lo, hi },
            Some(step) => Values::List(range(&lo, &hi, &number("step", step)?).map_err(bad)?),
        }
    } else {
        Values::List(spec.split(',').map(ParamValue::parse_literal).collect())
    };
    if let Values::List(list) = &values
        && list.iter().any(|v| matches!(v, ParamValue::Str(s) if s.is_empty()))
    {
        return Err(bad("an empty value in the list".into()));
    }
    Ok(Param {
        given: path.to_string(),
        path: path.to_string(),
        values,
    })
}

/// `lo, lo + step, ...` up to and including `hi`; integers when all three are.
fn range(lo: &ParamValue, hi: &ParamValue, step: &ParamValue) -> Result<Vec<ParamValue>, String> {
    if let (ParamValue::Int(lo), ParamValue::Int(hi), ParamValue::Int(step)) = (lo, hi, step) {
        if *step <= 0 {
            return Err(format!("the step must be positive, not {step}"));
        }
        let n = (hi - lo) / step + 1;
        if n as usize > GRID_MAX {
            return Err(format!("{n} values are too many"));
        }
        return Ok((0..n).map(|i| ParamValue::Int(lo + i * step)).collect());
    }
    let (lo, hi, step) = (
        lo.as_f64().expect("number"),
        hi.as_f64().expect("number"),
        step.as_f64().expect("number"),
    );
    if step.is_nan() || step <= 0.0 {
        return Err(format!("the step must be positive, not {step}"));
    }
    let n = ((hi - lo) / step + 1e-9).floor() as usize + 1;
    if n > GRID_MAX {
        return Err(format!("{n} values are too many"));
    }
    // Rounded to 9 decimals so 0.1 steps give 0.3, not 0.30000000000000004.
    Ok((0..n)
        .map(|i| ParamValue::Float(((lo + i as f64 * step) * 1e9).round() / 1e9))
        .collect())
}

fn list_of(param: &Param) -> Result<&[ParamValue], SweepError> {
    match &param.values {
        Values::List(list) => Ok(list),
        Values::Span { lo, hi } => Err(SweepError::Param {
            param: param.given.clone(),
            message: format!("{lo}..{hi} has no step: give {lo}..{hi}:STEP for a grid, or use --random N"),
        }),
    }
}

/// The cartesian product, first parameter slowest.
pub(super) fn grid(params: &[Param]) -> Result<Vec<Vec<ParamValue>>, SweepError> {
    let lists = params.iter().map(list_of).collect::<Result<Vec<_>, _>>()?;
    let total = lists
        .iter()
        .try_fold(1usize, |acc, l| acc.checked_mul(l.len()))
        .filter(|&n| n <= GRID_MAX)
        .ok_or_else(|| {
            SweepError::Usage(format!(
                "the grid has more than {GRID_MAX} configurations; sample it with --random N"
            ))
        })?;
    Ok((0..total).map(|k| decode(k, &lists)).collect())
}

/// Grid point number `k` (mixed radix, the last parameter fastest).
fn decode(mut k: usize, lists: &[&[ParamValue]]) -> Vec<ParamValue> {
    let mut point = vec![ParamValue::Bool(false); lists.len()];
    for (slot, list) in point.iter_mut().zip(lists).rev() {
        *slot = list[k % list.len()].clone();
        k /= list.len();
    }
    point
}

/// `n` points drawn from a ChaCha stream: distinct grid points when every parameter is
/// a list (the whole grid, in grid order, when it has no more than `n`), else
/// independent uniform draws.
pub(super) fn random_points(params: &[Param], n: usize, seed: u64) -> Vec<Vec<ParamValue>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let lists: Option<Vec<&[ParamValue]>> = params
        .iter()
        .map(|p| match &p.values {
            Values::List(list) => Some(list.as_slice()),
            Values::Span { .. } => None,
        })
        .collect();
    if let Some(lists) = lists {
        let total = lists.iter().try_fold(1usize, |acc, l| acc.checked_mul(l.len()));
        if let Some(total) = total
            && total <= n
        {
            return (0..total).map(|k| decode(k, &lists)).collect();
        }
        let mut seen = BTreeSet::new();
        let mut points = Vec::with_capacity(n);
        while points.len() < n {
            let picks: Vec<usize> = lists.iter().map(|l| rng.random_range(0..l.len())).collect();
            if seen.insert(picks.clone()) {
                points.push(picks.iter().zip(&lists).map(|(&i, l)| l[i].clone()).collect());
            }
        }
        return points;
    }
    (0..n)
        .map(|_| {
            params
                .iter()
                .map(|p| match &p.values {
                    Values::List(list) => list[rng.random_range(0..list.len())].clone(),
                    Values::Span { lo, hi } => match (lo, hi) {
                        (ParamValue::Int(lo), ParamValue::Int(hi)) => ParamValue::Int(rng.random_range(*lo..=*hi)),
                        _ => {
                            let (lo, hi) = (lo.as_f64().expect("number"), hi.as_f64().expect("number"));
                            let x = if lo == hi { lo } else { rng.random_range(lo..hi) };
                            ParamValue::Float((x * 1e9).round() / 1e9)
                        }
                    },
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_include_their_end_and_keep_integers() {
        let p = parse_param("policy.spare.buffer_gb=0..64:8").unwrap();
        assert_eq!(p.given, "policy.spare.buffer_gb");
        let Values::List(list) = p.values else { panic!() };
        assert_eq!(list.len(), 9);
        assert_eq!(list[8], ParamValue::Int(64));
        let Values::List(list) = parse_param("x=0.1..0.3:0.1").unwrap().values else {
            panic!()
        };
        assert_eq!(
            list,
            vec![ParamValue::Float(0.1), ParamValue::Float(0.2), ParamValue::Float(0.3)]
        );
        let Values::List(list) = parse_param("x=5m,10m,true,3").unwrap().values else {
            panic!()
        };
        assert_eq!(
            list,
            vec![
                ParamValue::Str("5m".into()),
                ParamValue::Str("10m".into()),
                ParamValue::Bool(true),
                ParamValue::Int(3)
            ]
        );
        assert!(parse_param("x=5..1:1").is_err());
        assert!(parse_param("x=1..5:0").is_err());
        assert!(parse_param("x=a..b:1").is_err());
        assert!(parse_param("novalue").is_err());
        assert_eq!(
            parse_param("x=1..5").unwrap().values,
            Values::Span {
                lo: ParamValue::Int(1),
                hi: ParamValue::Int(5)
            }
        );
    }

    #[test]
    fn random_draws_are_distinct_grid_points_and_repeatable() {
        let params = vec![parse_param("a=1..8:1").unwrap(), parse_param("b=1..8:1").unwrap()];
        let a = random_points(&params, 20, 7);
        assert_eq!(a, random_points(&params, 20, 7));
        assert_ne!(a, random_points(&params, 20, 8));
        let distinct: BTreeSet<String> = a.iter().map(|p| format!("{p:?}")).collect();
        assert_eq!(distinct.len(), 20);
        assert_eq!(
            random_points(&params, 100, 7).len(),
            64,
            "the whole grid when it is small"
        );
        let span = vec![parse_param("a=0.5..1.5").unwrap()];
        for point in random_points(&span, 50, 1) {
            let ParamValue::Float(x) = point[0] else { panic!() };
            assert!((0.5..1.5).contains(&x));
        }
    }
}
