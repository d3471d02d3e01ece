//! A component of another world (`other:thing/other`, exporting `handle`), built without
//! recur-guest, which the host must refuse to deploy.
wit_bindgen::generate!({
    inline: "
        package other:thing@1.0.0;

        world other {
            export handle: func(input: string) -> string;
        }
    ",
    world: "other",
});

struct Echo;

impl Guest for Echo {
    fn handle(input: String) -> String {
        input
    }
}

export!(Echo);
