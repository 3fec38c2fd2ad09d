fn main() {
    println!("csi-snapshotter");
}
