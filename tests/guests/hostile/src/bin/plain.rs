//! A plain WASI command: a valid component that does not implement the
//! `nimbus:function/handler` world, so deploying it must be refused.
fn main() {
    println!("not a handler");
}
