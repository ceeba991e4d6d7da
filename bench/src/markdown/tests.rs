//! Tests of `markdown`.

use super::*;

#[test]
fn parses_what_report_prints() {
    let mut r = crate::report::Report::default();
    r.str("label", "a \"b\"").int("n", 3).num("x", 1.5).bool("ok", true).opt_num("none", None);
    let (order, row) = parse_line(&r.json()).unwrap();
    assert_eq!(order, ["label", "n", "x", "ok", "none"]);
    assert_eq!(text(&row, "label"), "a \"b\"");
    assert_eq!(num(&row, "n"), Some(3.0));
    assert_eq!(num(&row, "x"), Some(1.5));
    assert!(matches!(row.get("ok"), Some(Value::Bool(true))));
    assert!(matches!(row.get("none"), Some(Value::Null)));
}

#[test]
fn formats_numbers() {
    assert_eq!(fmt(12_604_219.4), "12,604,219");
    assert_eq!(fmt(-1234.0), "-1,234");
    assert_eq!(fmt(40.37), "40.4");
    assert_eq!(fmt(0.0593), "0.059");
}
